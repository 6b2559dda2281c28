// The landscape: one unit of the network (or the output's class) as a heatmap over the plane of two
// inputs, the other inputs held at their current values, as TensorFlow Playground shows each neuron
// over its input plane. The 64 x 64 grid is ONE batch of 4,096 rows through onnxruntime-web, on the
// page's own graph (every Z[l] and A[l] is one of its outputs, so one run serves every unit); the
// values drawn are kept in window.forwardpassLandscape for anyone to check against the oracle.
//
// It reads the page through page.js's hooks (window.forwardpassPage: onChange(fn) and state()), and
// runs the page's graph: the editable one with the current W and b, so an edited weight redraws it.

const GRID = 64; // cells per side: 64 x 64 = 4,096 rows in one run
const PIXELS = 512; // the canvas's own resolution; CSS scales it
const RANGE = { min: -3, max: 3 }; // an axis's range when its input has no slider
// Playground's colours: orange below zero, grey at zero, blue above; NaN dark grey.
const NEGATIVE = [245, 147, 34];
const ZERO = [232, 234, 235];
const POSITIVE = [8, 119, 189];
const NOT_A_NUMBER = [64, 64, 64];
// Okabe and Ito's eight colours, told apart with any colour vision: one per class.
const CLASSES = [
  [230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66],
  [0, 114, 178], [213, 94, 0], [204, 121, 167], [0, 0, 0],
];
const PROBE_HINT = 'Point at the heatmap, or focus it and use the arrow keys, to read its value there.';
const STEPS = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
const NEEDS_ORT =
  'The landscape is computed in this browser and needs onnxruntime-web, which this server does not have: ' +
  'run `forwardpass web-runtime` (or `make web` in a checkout) and restart the server.';

const $ = (id) => document.getElementById(id);
const fmt = (v) => (Number.isFinite(v) ? String(Number(v.toPrecision(4))) : String(v));
const rgb = (c) => `rgb(${c.join(', ')})`;

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

// The units one run gives, named as the slides name them: z[l]_i and a[l]_i, ŷ_i for the output.
function unitsOf(desc) {
  const depth = desc.sizes.length - 1;
  const units = [];
  for (let l = 1; l <= depth; l++) {
    for (let i = 1; i <= desc.sizes[l]; i++) {
      units.push({ key: `Z${l}-${i}`, l, i, output: `Z${l}`, name: `z[${l}]_${i}` });
      const a = l === depth ? { output: desc.output, name: `ŷ${i}` } : { output: `A${l}`, name: `a[${l}]_${i}` };
      units.push({ key: `A${l}-${i}`, l, i, ...a });
    }
  }
  return units;
}

// A softmax output is a class's probability: there the argmax view is offered, and shown first.
const ARGMAX = 'argmax';
const modelKey = (desc) => (desc ? `${desc.name}/${desc.version}` : '');
const classifies = (desc) => desc.activations[desc.activations.length - 1] === 'softmax' && desc.sizes.at(-1) > 1;
const defaultShown = (desc) => (classifies(desc) ? ARGMAX : `A${desc.sizes.length - 1}-1`);

// The section's controls and picture, built once; index.html holds only <section id="landscape">.
function build(section) {
  const axis = (id, label) =>
    el('div', { class: 'landscape-pick' }, el('label', { for: id }, label), el('select', { id }));
  section.replaceChildren(
    el('h2', { id: 'landscape-heading' }, 'The landscape'),
    el('p', { class: 'note' },
      'One unit over the plane of two inputs, the other inputs held at their current values: every cell is ' +
      'one row of a single batch through onnxruntime-web. Pick the unit here, or select one in the drawing.'),
    el('div', { class: 'landscape-picks' },
      axis('landscape-h', 'Horizontal axis'), axis('landscape-v', 'Vertical axis'), axis('landscape-unit', 'Unit shown')),
    el('p', { id: 'landscape-status', class: 'note' }), // no live region: it changes with every step of a slider
    el('div', { id: 'landscape-result' }, el('figure', { class: 'landscape-figure' },
      el('div', { class: 'landscape-plot' },
        el('div', { class: 'landscape-y', 'aria-hidden': 'true' },
          el('span', { id: 'landscape-y-max' }), el('span', { id: 'landscape-y-name', class: 'landscape-name' }),
          el('span', { id: 'landscape-y-min' })),
        el('canvas', {
          id: 'landscape-canvas', role: 'img', tabindex: '0', width: String(PIXELS), height: String(PIXELS), 'aria-label': 'heatmap',
        }),
        el('div', { class: 'landscape-x', 'aria-hidden': 'true' },
          el('span', { id: 'landscape-x-min' }), el('span', { id: 'landscape-x-name', class: 'landscape-name' }),
          el('span', { id: 'landscape-x-max' })),
        el('div', { id: 'landscape-scale', class: 'landscape-scale' })),
      el('p', { id: 'landscape-probe', class: 'landscape-probe', 'aria-live': 'polite' }, PROBE_HINT),
      el('figcaption', { id: 'landscape-legend', class: 'landscape-legend' }))),
  );
}

// Colour of a value on a scale whose ends are ±reach: grey is always zero, as in Playground.
function shade(v, reach) {
  if (Number.isNaN(v)) return NOT_A_NUMBER;
  const t = reach > 0 ? Math.max(-1, Math.min(1, v / reach)) : 0;
  const end = t < 0 ? NEGATIVE : POSITIVE;
  return ZERO.map((z, k) => Math.round(z + (end[k] - z) * Math.abs(t)));
}

// The two axes' values at cell centres, and the batch: row r (top first, the vertical input
// falling), column c (the horizontal one rising); every other input at x.
function gridOf(x, h, v, ranges, float32) {
  const round = float32 ? Math.fround : (t) => t;
  const along = ({ min, max }, k) => round(min + ((max - min) * (k + 0.5)) / GRID);
  const xs = Array.from({ length: GRID }, (_, c) => along(ranges[h], c));
  const ys = Array.from({ length: GRID }, (_, r) => along(ranges[v], GRID - 1 - r));
  const fixed = x.map(round);
  const rows = [];
  for (let r = 0; r < GRID; r++) {
    for (let c = 0; c < GRID; c++) {
      const row = fixed.slice();
      row[h] = xs[c];
      row[v] = ys[r];
      rows.push(row);
    }
  }
  return { xs, ys, fixed, rows };
}

// One output's values for one unit, for every row, whatever the model's layout.
function unitValues(tensor, desc, unit, m) {
  const n = desc.sizes[unit.l];
  const data = tensor.data;
  const at = desc.layout === 'rows' ? (k) => data[k * n + unit.i - 1] : (k) => data[(unit.i - 1) * m + k];
  return Float64Array.from({ length: m }, (_, k) => Number(at(k)));
}

function argmaxOf(outputs, k, m) {
  return Uint32Array.from({ length: m }, (_, row) => {
    let best = 0;
    for (let c = 1; c < k; c++) if (outputs[c][row] > outputs[best][row]) best = c;
    return best;
  });
}

class Landscape {
  constructor(page, section) {
    this.page = page;
    this.section = section;
    this.desc = null;
    this.x = null; // the x the picture is for
    this.selected = null; // the unit last selected on the page
    this.out = null; // the last run's outputs, for every unit, with its grid
    this.runKey = ''; // what that run computed: the model's version, the axes, their ranges, the held inputs
    this.image = null; // the cells painted from it
    this.cursor = null; // [r, c] of the cell read out, or null
    this.running = false;
    this.again = false; // a change came during the run: run again after it
    this.drawn = 0;
    build(section);
    this.canvas = $('landscape-canvas');
    for (const id of ['landscape-h', 'landscape-v']) $(id).addEventListener('change', () => this.axesChanged(id));
    $('landscape-unit').addEventListener('change', () => this.draw());
    this.canvas.addEventListener('pointermove', (event) => this.pointAt(event));
    this.canvas.addEventListener('pointerleave', () => this.probe(null));
    this.canvas.addEventListener('keydown', (event) => this.step(event));
    this.canvas.addEventListener('blur', () => this.probe(null));
    section.dataset.pending = '0';
    section.dataset.drawn = '0';
    page.onChange(() => this.update());
    this.update();
  }

  // A new model: its inputs in both axis pickers, its units in the unit picker.
  setModel(desc) {
    this.desc = desc;
    this.out = null;
    this.image = null;
    this.cursor = null;
    this.runKey = '';
    const names = Array.from({ length: desc.sizes[0] }, (_, i) => `x${i + 1}`);
    const options = (select, chosen) =>
      select.replaceChildren(...names.map((name, i) => el('option', { value: String(i), ...(i === chosen ? { selected: '' } : {}) }, name)));
    options($('landscape-h'), 0);
    options($('landscape-v'), Math.min(1, names.length - 1));
    const depth = desc.sizes.length - 1;
    const groups = [];
    const units = unitsOf(desc);
    const option = (u) => el('option', { value: u.key }, u.name);
    const output = [];
    if (classifies(desc)) output.push(el('option', { value: ARGMAX }, 'class: argmax of ŷ'));
    output.push(...units.filter((u) => u.l === depth && u.output === desc.output).map(option));
    groups.push(el('optgroup', { label: 'Output ŷ' }, ...output));
    for (let l = 1; l <= depth; l++) {
      const label = l === depth ? `Layer ${l}: z[${l}]` : `Layer ${l}: z[${l}], a[${l}]`;
      const members = units.filter((u) => u.l === l && !(l === depth && u.output === desc.output));
      groups.push(el('optgroup', { label }, ...members.map(option)));
    }
    $('landscape-unit').replaceChildren(...groups);
    $('landscape-unit').value = defaultShown(desc);
  }

  axesChanged(id) {
    const other = id === 'landscape-h' ? 'landscape-v' : 'landscape-h';
    if ($(id).value === $(other).value) {
      // Two different inputs always: the other picker moves to the first input that is free.
      const free = [...$(other).options].find((o) => o.value !== $(id).value);
      if (free) $(other).value = free.value;
    }
    this.update();
  }

  // What the page shows now: compute again where the plane's batch changed, else only redraw.
  async update() {
    const now = this.page.state();
    if (!now || !now.desc) return;
    if (modelKey(now.desc) !== modelKey(this.desc)) this.setModel(now.desc);
    this.desc = now.desc;
    if (now.selected && unitsOf(now.desc).some((u) => u.key === now.selected)) {
      if (now.selected !== this.selected) $('landscape-unit').value = now.selected;
    }
    this.selected = now.selected;
    if (now.desc.sizes[0] < 2) return this.say('The landscape needs two inputs; this model has one.');
    if (!now.run) return this.say(now.why || NEEDS_ORT);
    // While a field is invalid the picture stays, marked stale as the page marks its results
    // (class "stale": dimmed under a line that says so), until the input is valid again.
    $('landscape-result').classList.toggle('stale', !now.valid || !now.x);
    if (!now.valid || !now.x) {
      $('landscape-status').textContent = 'Stale: the landscape waits for a valid input.';
      this.section.dataset.pending = this.running ? '1' : '0';
      return;
    }
    this.x = now.x;
    const key = JSON.stringify([now.version, this.axes(), this.ranges(), now.x.filter((_, i) => !this.axes().includes(i))]);
    if (key === this.runKey && this.out) return this.draw();
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    this.section.dataset.pending = '1';
    try {
      await this.compute(now, key);
    } catch (error) {
      this.say(`onnxruntime-web failed on the landscape: ${error.message || error}`);
    } finally {
      this.running = false;
      this.section.dataset.pending = this.again ? '1' : '0';
    }
    if (this.again) {
      this.again = false;
      await this.update();
    }
  }

  axes() {
    return [Number($('landscape-h').value), Number($('landscape-v').value)];
  }

  // Each axis spans its input's slider (which widens to a typed x where the page does so).
  ranges() {
    return Array.from({ length: this.desc.sizes[0] }, (_, i) => {
      const slider = $(`x${i + 1}-slider`);
      const min = slider ? Number(slider.min) : RANGE.min;
      const max = slider ? Number(slider.max) : RANGE.max;
      return Number.isFinite(min) && Number.isFinite(max) && max > min ? { min, max } : RANGE;
    });
  }

  async compute(now, key) {
    const [h, v] = this.axes();
    const ranges = this.ranges();
    const grid = gridOf(now.x, h, v, ranges, now.desc.dtype !== 'float64');
    const m = grid.rows.length;
    const { outputs, ms } = await now.run(grid.rows);
    if (modelKey(now.desc) !== modelKey(this.desc)) return; // another model was chosen meanwhile
    this.out = { outputs, grid, ms, h, v, ranges, m };
    this.runKey = key;
    this.draw();
  }

  say(message) {
    $('landscape-status').textContent = message;
    this.canvas.setAttribute('aria-label', `heatmap: none. ${message}`);
    this.canvas.getContext('2d').clearRect(0, 0, PIXELS, PIXELS);
    this.image = null;
    $('landscape-legend').replaceChildren();
    $('landscape-scale').replaceChildren();
    this.section.dataset.pending = '0';
  }

  // Paint the chosen unit (or the classes) from the last run, then the current x as a point.
  draw() {
    if (!this.out) return;
    const { outputs, grid, ms, h, v, ranges, m } = this.out;
    const desc = this.desc;
    const depth = desc.sizes.length - 1;
    const shown = $('landscape-unit').value || defaultShown(desc);
    const names = [`x${h + 1}`, `x${v + 1}`];
    const image = new ImageData(GRID, GRID);
    const paint = (k, colour) => image.data.set([...colour, 255], 4 * k);
    const kept = { horizontal: names[0], vertical: names[1], xs: grid.xs, ys: grid.ys, fixed: grid.fixed, unit: shown, ms };
    let label;
    if (shown === ARGMAX) {
      const k = desc.sizes[depth];
      const units = unitsOf(desc).filter((u) => u.l === depth && u.output === desc.output);
      const classes = argmaxOf(units.map((u) => unitValues(outputs[u.output], desc, u, m)), k, m);
      classes.forEach((c, cell) => paint(cell, CLASSES[c % CLASSES.length]));
      kept.classes = Array.from(classes, (c) => c + 1);
      const seen = new Set(kept.classes);
      this.classLegend(k, seen);
      label = `heatmap of the class, argmax of ŷ, over ${names[0]} and ${names[1]}: ${seen.size} of ${k} classes appear`;
    } else {
      const unit = unitsOf(desc).find((u) => u.key === shown);
      const values = unitValues(outputs[unit.output], desc, unit, m);
      let lo = Infinity;
      let hi = -Infinity;
      for (const value of values) {
        if (value < lo) lo = value;
        if (value > hi) hi = value;
      }
      const reach = Math.max(Math.abs(lo), Math.abs(hi));
      values.forEach((value, cell) => paint(cell, shade(value, Number.isFinite(reach) ? reach : Number.MAX_VALUE)));
      kept.values = Array.from(values);
      kept.layer = unit.l;
      kept.index = unit.i;
      kept.kind = unit.key[0];
      this.valueLegend(unit.name, lo, hi, reach);
      label = `heatmap of ${unit.name} over ${names[0]} and ${names[1]}: from ${fmt(lo)} to ${fmt(hi)}`;
    }
    const fixed = this.x.map((value, i) => [i, value]).filter(([i]) => i !== h && i !== v);
    const held = fixed.map(([i, value]) => `x${i + 1} = ${fmt(value)}`).join(', ');
    label += `; ${held ? `${held} held; ` : ''}the current x, ${names[0]} = ${fmt(this.x[h])}, ${names[1]} = ${fmt(this.x[v])}, is the ringed point`;
    this.image = image;
    this.canvas.setAttribute('aria-label', label);
    $('landscape-x-name').textContent = names[0];
    $('landscape-y-name').textContent = names[1];
    $('landscape-x-min').textContent = fmt(ranges[h].min);
    $('landscape-x-max').textContent = fmt(ranges[h].max);
    $('landscape-y-min').textContent = fmt(ranges[v].min);
    $('landscape-y-max').textContent = fmt(ranges[v].max);
    $('landscape-status').textContent =
      `${GRID} × ${GRID} = ${(GRID * GRID).toLocaleString('en')} rows in one onnxruntime-web run: ${Number(ms.toPrecision(2))} ms` +
      (held ? `, with ${held}.` : '.');
    window.forwardpassLandscape = kept;
    this.probe(this.cursor); // paints, and reads the cell read out before anew
    this.drawn += 1;
    this.section.dataset.model = `${desc.name}/${desc.version}`; // tests wait for it
    this.section.dataset.drawn = String(this.drawn);
  }

  // The cell under the pointer (or a finger).
  pointAt(event) {
    const box = this.canvas.getBoundingClientRect();
    const cell = (offset, size) => Math.max(0, Math.min(GRID - 1, Math.floor((offset / size) * GRID)));
    this.probe([cell(event.clientY - box.top, box.height), cell(event.clientX - box.left, box.width)]);
  }

  // The arrow keys move a cursor over the cells, from the current x's.
  step(event) {
    const move = STEPS[event.key];
    if (!move || !this.out) return;
    event.preventDefault();
    const [r, c] = this.cursor || this.cellOfX();
    this.probe([Math.max(0, Math.min(GRID - 1, r + move[0])), Math.max(0, Math.min(GRID - 1, c + move[1]))]);
  }

  cellOfX() {
    const { h, v, ranges } = this.out;
    const cell = (value, { min, max }) => Math.max(0, Math.min(GRID - 1, Math.floor(((value - min) / (max - min)) * GRID)));
    return [GRID - 1 - cell(this.x[v], ranges[v]), cell(this.x[h], ranges[h])];
  }

  // Read out a cell (its two inputs and the value drawn there) and ring it; null: neither.
  probe(cell) {
    const kept = window.forwardpassLandscape;
    this.cursor = cell;
    if (this.image && this.out) this.paint();
    if (!cell || !kept || !this.out) {
      $('landscape-probe').textContent = PROBE_HINT;
      return;
    }
    const [r, c] = cell;
    const k = r * GRID + c;
    const at = `${kept.horizontal} = ${fmt(kept.xs[c])}, ${kept.vertical} = ${fmt(kept.ys[r])}`;
    const unit = unitsOf(this.desc).find((u) => u.key === kept.unit);
    $('landscape-probe').textContent = kept.classes
      ? `${at}: class ${kept.classes[k]} (ŷ${kept.classes[k]} largest)`
      : `${at}: ${unit.name} = ${fmt(kept.values[k])}`;
  }

  // The cells, the current x as a ringed point, and the cell read out as a square.
  paint() {
    const { h, v, ranges } = this.out;
    const cells = new OffscreenCanvas(GRID, GRID);
    cells.getContext('2d').putImageData(this.image, 0, 0);
    const context = this.canvas.getContext('2d');
    context.imageSmoothingEnabled = false; // one square per grid point: what was computed, no more
    context.drawImage(cells, 0, 0, PIXELS, PIXELS);
    const at = (value, { min, max }) => ((value - min) / (max - min)) * PIXELS;
    const px = Math.max(0, Math.min(PIXELS, at(this.x[h], ranges[h])));
    const py = PIXELS - Math.max(0, Math.min(PIXELS, at(this.x[v], ranges[v])));
    context.beginPath();
    context.arc(px, py, 10, 0, 2 * Math.PI);
    context.fillStyle = '#fff';
    context.fill();
    context.lineWidth = 5;
    context.strokeStyle = '#111';
    context.stroke();
    if (this.cursor) {
      const size = PIXELS / GRID;
      context.lineWidth = 3;
      context.strokeRect(this.cursor[1] * size - 1.5, this.cursor[0] * size - 1.5, size + 3, size + 3);
    }
  }

  valueLegend(name, lo, hi, reach) {
    const bar = el('canvas', { class: 'landscape-bar', width: '256', height: '1', 'aria-hidden': 'true' });
    const from = Math.min(lo, 0);
    const to = Math.max(hi, 0);
    const row = new ImageData(256, 1);
    for (let p = 0; p < 256; p++) row.data.set([...shade(from + ((to - from) * (p + 0.5)) / 256, reach), 255], 4 * p);
    bar.getContext('2d').putImageData(row, 0, 0);
    const ticks = [el('span', {}, fmt(from)), el('span', {}, fmt(to))];
    if (from < 0 && to > 0) {
      // "0" where zero falls on the bar (CSSOM, which the page's policy allows), if it has room there
      const at = (100 * -from) / (to - from);
      const zero = el('span', { class: 'landscape-zero' }, '0');
      zero.style.left = `${at}%`;
      if (at > 15 && at < 85) ticks.splice(1, 0, zero);
    }
    $('landscape-scale').replaceChildren(bar, el('div', { class: 'landscape-ticks' }, ...ticks));
    $('landscape-legend').replaceChildren(
      el('p', {}, `Colour is ${name}: orange below zero, grey at zero, blue above; here from ${fmt(lo)} to ${fmt(hi)}. ` +
        'The ringed point is the current x.'),
    );
  }

  classLegend(k, seen) {
    const items = Array.from({ length: k }, (_, c) => {
      const swatch = el('span', { class: 'landscape-swatch', 'aria-hidden': 'true' });
      swatch.style.background = rgb(CLASSES[c % CLASSES.length]);
      return el('li', {}, swatch, `class ${c + 1}: ŷ${c + 1} largest${seen.has(c + 1) ? '' : ' (nowhere here)'}`);
    });
    $('landscape-scale').replaceChildren();
    $('landscape-legend').replaceChildren(
      el('ul', { class: 'landscape-classes' }, ...items),
      el('p', {}, 'Each point is coloured by the class whose ŷ is largest there. The ringed point is the current x.'),
    );
  }
}

// The batch of rows as the model's input: rows x n_x in the rows layout, n_x x rows in columns.
function batchOf(desc, rows) {
  const n = desc.sizes[0];
  const m = rows.length;
  const data = new Array(n * m);
  rows.forEach((row, k) => row.forEach((value, i) => (data[desc.layout === 'rows' ? k * n + i : i * m + k] = value)));
  return { data, shape: desc.layout === 'rows' ? [m, n] : [n, m] };
}

// page.js's hooks as the landscape reads them:
//   state()  null before a model is shown, else { desc, x (the last valid one), valid, selected (a
//            unit key such as 'A1-2', or null), version (changes with the model, W or b), run(rows)
//            (a Promise of { outputs, ms }, or null where the browser cannot run), why (if not) }
//   onChange(fn)
// The time of a run includes any of the page's own runs queued before it (page.js runs one at a time).
function fromHook(hook) {
  let version = 0;
  let model = '';
  return {
    onChange: (fn) =>
      hook.onChange((view, reason) => {
        if (reason === 'weights' || reason === 'model') version += 1;
        fn();
      }),
    state() {
      const s = hook.state();
      if (!s || !s.model) return null;
      const key = `${s.model.name}/${s.model.version}`;
      if (key !== model) {
        model = key;
        version += 1;
      }
      const selected = s.selected && s.selected.layer > 0 ? `A${s.selected.layer}-${s.selected.unit}` : null;
      const run = s.run
        ? async (rows) => {
            const { data, shape } = batchOf(s.model, rows);
            const feeds = { [s.model.input.name]: s.tensor(data, shape) };
            const start = performance.now();
            const outputs = await s.run(feeds);
            return { outputs, ms: performance.now() - start };
          }
        : null;
      const why = s.ort ? 'onnxruntime-web cannot run this model, so there is no landscape.' : NEEDS_ORT;
      return { desc: s.model, x: s.x, valid: s.valid !== false, selected, version, run, why };
    },
  };
}

const section = $('landscape');
if (section && window.forwardpassPage) new Landscape(fromHook(window.forwardpassPage), section);
