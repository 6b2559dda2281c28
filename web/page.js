// The page of `forwardpass serve`: pick a model, type x, and see every z[l] and a[l] computed three
// ways: by onnxruntime-web in this browser (on the server's copy of the network with its hidden
// outputs, and W[l], b[l] as its inputs so that they can be edited here), by the server over the V2
// REST API (while the weights are the served ones), and by the server's float64 oracle, whose error
// bound (forwardpass/tolerance.py) judges the other two. Nothing numeric is computed here but the
// differences, the worked sums' products and a large matrix's min, max and mean shown. Every text from the server (model names,
// messages) goes in as text, never HTML.

// Hooks for the page's other modules (web/batch.js, web/landscape.js), on window.forwardpassPage:
//
//   forwardpassPage.onChange(fn)  calls fn(view, reason) whenever the model, W, b, x or the selected
//                                 unit changes; reason is 'model', 'weights', 'x', 'unit' or 'invalid'
//                                 (a field was made invalid). Called at once too if a model is shown.
//   forwardpassPage.state()       the current view, or null before a model is shown:
//     model      the GET .../network description (sizes, activations, layout, dtype, input, output...)
//     path(s)    '/v2/models/{m}/versions/{v}' + s for the shown model version
//     W          [W[1], ..., W[L]]: W[l] as n[l] rows of n[l-1] numbers (edited or served), so W[l]
//                is state().W[l - 1]; the page's own arrays, to read (copy them to change them)
//     b          [b[1], ..., b[L]]: b[l] as n[l] numbers
//     x          the current x, n[0] numbers (the last valid one)
//     edited     whether W or b differ from the served file's (then the server's V2 answers do not
//                apply: post W and b with every oracle request)
//     valid      false while a field of the page (x, W or b) is invalid: x, W and b are then the last
//                valid ones, and a module marks its results stale (class "stale" gives the look)
//     selected   {layer, unit} of the selected unit (1-based; layer 0 is x), or null
//     ort        the onnxruntime-web module, or null where the server has none
//     run(feeds) a Promise of the editable graph's outputs (name -> ort.Tensor: every Z{l}, A{l} and
//                the model's output) for feeds holding the input (model.input.name, in the model's
//                layout) and, unless given, the current W{l} ([n_l, n_{l-1}]) and b{l} ([n_l, 1]);
//                runs are queued one at a time. null where the browser cannot run the model.
//     tensor(values, shape)  an ort.Tensor of the model's dtype
//     post(s, body)          POST JSON to path(s) with the token; a Promise of the parsed answer,
//                            rejected with an Error carrying the server's message
//
// window.forwardpassPage is set before this module's first await: a module script placed after
// page.js's in index.html finds it when it runs.

const TOKEN_KEY = 'forwardpass.token';
const SLIDER = { min: -3, max: 3, step: 0.01 };
const MATRIX_MAX = 16; // a matrix larger than 16 x 16 is summarised, and edited through the drawing
const DRAWN_SCALE = 0.7; // the drawing shrinks to fit a phone down to 70 %, then scrolls in its box
const LINE = 13; // px between the lines of values beside a unit in the drawing
const SVG_NS = 'http://www.w3.org/2000/svg';
// What a result is shown in (and each layer's values, [data-values]): marked stale together while a
// field of the page is invalid. Not the fields: they stay as they are, to be corrected.
const RESULTS = ['answers-box', 'drawing', 'unit', 'summary'];

const $ = (id) => document.getElementById(id);
const state = {
  entries: [], desc: null, session: null, chain: Promise.resolve(), seq: 0, pending: 0, selections: 0,
  served: null, // {W, b}: the served file's weights, as GET .../network lists them
  W: null, b: null, // the weights shown and computed with: the served ones, or edited
  x: null, // the last valid x
  invalid: new Map(), // field's accessible name -> what is wrong with it
  selected: null, // {layer, unit}
  shown: null, // the last values shown: {x, browser, oracle}
  listeners: [],
};
let ort = null;

class ServerError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Elements are built with text children only: no innerHTML anywhere on this page.
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function svgEl(tag, attributes = {}, text = '') {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text) node.textContent = text;
  return node;
}

// A symbol as the slides write it: base, [layer] up, index down (z[1]_2, W[1], ŷ_1, x_3).
function sym(base, layer = null, index = null) {
  return el(
    'span', { class: 'sym' }, base,
    ...(layer === null ? [] : [el('sup', {}, `[${layer}]`)]),
    ...(index === null ? [] : [el('sub', {}, String(index))]),
  );
}

// The name of unit i of layer l: x_i, a[l]_i, or ŷ_i for the output (a[L] = ŷ).
function unitSym(l, i) {
  const depth = state.desc.sizes.length - 1;
  return l === 0 ? sym('x', null, i) : l === depth ? sym('ŷ', null, i) : sym('a', l, i);
}
const unitName = (l, i) => (l === 0 ? `x_${i}` : l === state.desc.sizes.length - 1 ? `ŷ_${i}` : `a[${l}]_${i}`);

// The error line near what the user just did: the batch box has its own, everything else the top one.
function showError(message, where = 'error') {
  const line = $(where);
  line.textContent = message;
  line.hidden = !message;
}

async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set('Authorization', `Bearer ${token}`);
  const response = await fetch(path, { ...init, headers });
  if (response.ok) return response;
  let message = response.statusText;
  try {
    message = (await response.json()).error || message;
  } catch {
    // not JSON: keep the status text
  }
  if (response.status === 401) askForToken();
  throw new ServerError(response.status, message);
}

const postJson = (path, body) =>
  api(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

function refused(what, error) {
  if (error instanceof ServerError) return `The server refused ${what} (HTTP ${error.status}): ${error.message}`;
  return `${what} failed: ${error.message || error}`;
}

function askForToken() {
  const form = $('token-form');
  if (!form.hidden) return;
  form.hidden = false;
  $('token').focus();
}

function modelPath(suffix = '') {
  const { name, version } = state.entries[$('model').value];
  return `/v2/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}${suffix}`;
}

// Numbers: float32 to 9 significant digits (enough to tell any two float32 apart), float64 to 17.
const digits = () => (state.desc && state.desc.dtype === 'float64' ? 17 : 9);
const fmt = (v) => (v === undefined || v === null ? '–' : Number.isFinite(v) ? v.toPrecision(digits()) : String(v));
// The drawing and the worked sums: 4 significant digits, in 12 characters at most ("z -1.235e-15").
function fmtDrawn(v) {
  if (v === undefined || v === null) return '';
  if (!Number.isFinite(v)) return String(v);
  const size = Math.abs(v);
  if (size !== 0 && (size < 1e-3 || size >= 1e4)) return v.toExponential(3).replace('e+', 'e');
  return String(Number(v.toPrecision(4)));
}
const small = (v) => (Number.isFinite(v) ? v.toExponential(2) : String(v));
const share = (diff, bound) => (bound > 0 ? `${((100 * diff) / bound).toPrecision(2)}%` : diff === 0 ? '0%' : '∞');

// A weight as the model's dtype holds it, and written as briefly as reads back to it: a float32
// 0.1 is 0.100000001490116..., shown as 0.1.
const stored = (v) => (state.desc.dtype === 'float32' ? Math.fround(v) : v);
function brief(v) {
  if (state.desc.dtype !== 'float32' || !Number.isFinite(v)) return String(v);
  for (let p = 1; p < 9; p++) {
    const text = Number(v.toPrecision(p));
    if (Math.fround(text) === Math.fround(v)) return String(text);
  }
  return String(Number(v.toPrecision(9)));
}

async function loadRuntime() {
  try {
    ort = await import('./ort/ort.wasm.min.mjs');
    ort.env.wasm.numThreads = 1; // enough for these networks, and needs no cross-origin isolation
    ort.env.wasm.wasmPaths = new URL('./ort/', import.meta.url).href;
    $('runtime-status').textContent = `onnxruntime-web ${ort.env.versions.web} (WebAssembly, 1 thread) computes in this browser.`;
  } catch {
    ort = null;
    $('runtime-status').textContent =
      'onnxruntime-web is not installed on this server, so nothing is computed in this browser: run ' +
      '`forwardpass web-runtime` (or `make web` in a checkout) and restart the server. ' +
      'The server\u2019s answers and the oracle\u2019s are shown below, for edited weights too (the oracle\u2019s).';
  }
}

const clip = (text, length = 60) => (text.length > length ? `${text.slice(0, length - 1)}…` : text);
const units = (n) => `${n} unit${n === 1 ? '' : 's'}`;

// The hooks of the comment at the top.
function view() {
  if (!state.desc || !state.W) return null;
  return {
    model: state.desc,
    path: modelPath,
    W: state.W,
    b: state.b,
    x: state.x,
    edited: isEdited(),
    valid: state.invalid.size === 0,
    selected: state.selected,
    ort,
    run: state.session ? runEditable : null,
    tensor: tensorOf,
    post: (suffix, body) => postJson(modelPath(suffix), body).then((r) => r.json()),
  };
}

function notify(reason) {
  const shown = view();
  if (!shown) return;
  for (const listener of state.listeners) {
    try {
      listener(shown, reason);
    } catch (error) {
      console.error('a forwardpassPage listener failed:', error);
    }
  }
}

window.forwardpassPage = {
  onChange(listener) {
    state.listeners.push(listener);
    const shown = view();
    if (shown) listener(shown, 'model');
  },
  state: view,
};
window.forwardpassPage.parseBatch = (text) => parseBatch(text); // batch.js: the batch box read as here

async function loadModels() {
  state.entries = await (await postJson('/v2/repository/index', {})).json();
  const select = $('model');
  select.replaceChildren(
    ...state.entries.map((e, i) =>
      e.state === 'READY'
        ? el('option', { value: String(i) }, `${e.name}, version ${e.version}`)
        : el('option', { value: String(i), disabled: '' }, `${e.name}: not ready (${clip(e.reason || e.state)})`),
    ),
  );
  const ready = state.entries.filter((e) => e.state === 'READY');
  if (!ready.length) throw new Error('the server has no ready model');
  // The latest version of the first model by default, as the V2 API picks without a version.
  const first = ready[0].name;
  select.value = String(state.entries.findLastIndex((e) => e.name === first && e.state === 'READY'));
}

async function selectModel() {
  const entry = state.entries[$('model').value];
  const ticket = ++state.selections; // a quicker second choice wins over a slower first one
  const old = state.session;
  state.desc = null;
  state.session = null;
  if (old) state.chain = state.chain.then(() => old.release()); // after any run still going on it
  const desc = await (await api(modelPath('/network'))).json();
  if (ticket !== state.selections) return;
  state.desc = desc;
  const copy = (m) => JSON.parse(JSON.stringify(m));
  state.served = desc.weights ? { W: desc.weights.map((w) => w.W), b: desc.weights.map((w) => w.b) } : null;
  state.W = state.served ? copy(state.served.W) : null;
  state.b = state.served ? copy(state.served.b) : null;
  state.invalid.clear();
  state.selected = null;
  state.shown = null;
  renderModel();
  let cannotRun = '';
  if (ort) {
    // W and b as inputs where the server lists them, so that edited weights run here too.
    const graph = state.served ? '/network/editable.onnx' : '/network/model.onnx';
    const bytes = new Uint8Array(await (await api(modelPath(graph))).arrayBuffer());
    try {
      const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
      if (ticket !== state.selections) {
        await session.release();
        return;
      }
      state.session = session;
    } catch (error) {
      // Still show the server's and the oracle's answers, and say why the browser has none.
      cannotRun = `onnxruntime-web cannot run this model: ${error.message || error}`;
    }
  }
  await compute('model');
  if (cannotRun) showError(cannotRun);
  document.body.dataset.shown = `${entry.name}/${entry.version}`; // tests wait for it
}

function renderModel() {
  const d = state.desc;
  const depth = d.sizes.length - 1;
  const shape = `[${d.input.shape.join(', ')}]`;
  $('facts').textContent =
    `${d.sizes.join('-')} network, ${d.layout} layout, ${d.dtype}; input ${d.input.name} ${shape} ` +
    `(${d.input.datatype}). Error bound: ${d.tolerance.mode}, u = ${small(d.tolerance.unit)} (${d.tolerance.reason}).`;
  $('equations').replaceChildren(
    ...d.activations.map((act, i) => {
      const l = i + 1;
      return el('li', {}, ...layerEquations(l, act), el('span', { class: 'shape' },
        `W[${l}]: ${d.sizes[l]} × ${d.sizes[i]}, b[${l}]: ${d.sizes[l]} × 1`));
    }),
    el('li', { class: 'plain' }, el('span', { class: 'eq' }, sym('ŷ'), ' = ', sym('a', depth))),
  );
  renderInputs();
  renderDrawing();
  renderLayers();
  renderWeightsBar();
  renderUnit();
  renderUnitEditor();
  $('batch').value = [defaultX(), defaultX().map((v) => -v)].map((row) => row.join(', ')).join('\n');
  $('batch-out').replaceChildren();
}

// z[l] = W[l] a[l-1] + b[l] and a[l] = g(z[l]), for one example, as the slides write them.
function layerEquations(l, act) {
  const before = l === 1 ? sym('x') : sym('a', l - 1);
  return [
    el('span', { class: 'eq' }, sym('z', l), ' = ', sym('W', l), ' ', before, ' + ', sym('b', l)),
    el('span', { class: 'eq' }, sym('a', l), ' = ', ...applied(act, sym('z', l))),
  ];
}

// g(z) for an activation as the server names it: "relu", or "leaky_relu:0.2" for leaky_relu(z; 0.2).
function applied(act, argument) {
  const [name, parameter] = act.split(':');
  return [`${name}(`, argument, parameter === undefined ? ')' : `; ${parameter})`];
}

const defaultX = () => Array.from({ length: state.desc.sizes[0] }, (_, i) => ((i % 10) + 1) / 10);

function renderInputs() {
  const rows = defaultX().map((value, i) => {
    const name = `x${i + 1}`;
    const number = el('input', { id: name, type: 'number', step: 'any', value: String(value), inputmode: 'decimal' });
    // value last: set before min, max and step, it would be clamped to the default range's steps
    const slider = el('input', {
      id: `${name}-slider`, type: 'range', 'aria-label': `${name} slider`,
      min: String(SLIDER.min), max: String(SLIDER.max), step: String(SLIDER.step), value: String(value),
    });
    number.addEventListener('input', () => {
      const typed = Number(number.value);
      if (number.value.trim() !== '' && Number.isFinite(typed)) {
        // A typed value outside the slider's range widens it, so that the slider shows it too.
        if (typed < Number(slider.min)) slider.min = String(Math.floor(typed));
        if (typed > Number(slider.max)) slider.max = String(Math.ceil(typed));
        slider.value = number.value;
      }
      compute('x');
    });
    slider.addEventListener('input', () => {
      number.value = slider.value;
      compute('x');
    });
    return el('div', { class: 'input-row' }, el('label', { for: name }, unitSym(0, i + 1)), number, slider);
  });
  $('inputs').replaceChildren(...rows);
}

// The drawing: show.py's SVG, with a box beside each unit for its values (show.py leaves the room
// for it, and no edge crosses it), each unit a button that selects it, each edge one that edits it.
function renderDrawing() {
  const svg = new DOMParser().parseFromString(state.desc.svg, 'image/svg+xml').documentElement;
  const [, , width] = svg.getAttribute('viewBox').split(' ').map(Number);
  const boxWidth = Number(svg.dataset.valueWidth);
  const gap = Number(svg.dataset.valueGap);
  svg.removeAttribute('width');
  svg.removeAttribute('height');
  // In rem, so that it grows with the type (larger on a projector), and never huge; on a phone it
  // shrinks to DRAWN_SCALE, no further (its text would be too small), then scrolls in its box.
  svg.style.maxWidth = `${(1.6 * width) / 16}rem`;
  svg.style.minWidth = `${Math.round(DRAWN_SCALE * width)}px`;
  svg.setAttribute('role', 'group');
  svg.setAttribute('aria-label', `The ${state.desc.sizes.join('-')} network: select a unit to see its sum worked out`);
  const depth = state.desc.sizes.length - 1;
  for (const stub of svg.querySelectorAll('.stub')) stub.remove(); // the boxes take their room
  for (const circle of svg.querySelectorAll('circle[data-unit]')) {
    const [l, i] = circle.dataset.unit.split(':').map(Number);
    const x = Number(circle.getAttribute('cx')) + Number(circle.getAttribute('r')) + gap;
    const y = Number(circle.getAttribute('cy'));
    const lines = l === 0 ? [`drawing-x-${i}`] : [`drawing-Z${l}-${i}`, `drawing-A${l}-${i}`];
    const height = lines.length * LINE + 5;
    const box = svgEl('g', { class: 'values', 'data-box': `${l}:${i}` });
    box.append(svgEl('rect', { x, y: y - height / 2, width: boxWidth, height, rx: 3 }));
    lines.forEach((key, n) => {
      box.append(svgEl('text', { x: x + 4, y: y - height / 2 + 2 + LINE * (n + 1) - 3, class: 'value', 'data-cell': key }));
    });
    circle.after(box);
    circle.setAttribute('tabindex', '0');
    circle.setAttribute('role', 'button');
    circle.setAttribute('aria-pressed', 'false');
    circle.setAttribute('aria-label', `${unitName(l, i)}${l === depth ? ` (a[${l}]_${i})` : ''}`);
  }
  const drawn = document.importNode(svg, true);
  drawn.addEventListener('click', (event) => {
    const target = event.target.closest('[data-unit], [data-box], [data-name], line[data-weight]');
    if (!target) return;
    if (target.dataset.weight) {
      const [l, j, k] = target.dataset.weight.split(':').map(Number);
      selectUnit(l, j, k);
    } else {
      const [l, i] = (target.dataset.unit || target.dataset.box || target.dataset.name).split(':').map(Number);
      selectUnit(l, i);
    }
  });
  drawn.addEventListener('keydown', (event) => {
    const circle = event.target.closest('circle[data-unit]');
    if (!circle || (event.key !== 'Enter' && event.key !== ' ')) return;
    event.preventDefault();
    const [l, i] = circle.dataset.unit.split(':').map(Number);
    selectUnit(l, i);
  });
  $('drawing').replaceChildren(drawn);
  paintEdges();
  const elided = state.desc.sizes.some((n) => n > state.desc.max_drawn_units);
  $('drawing-caption').textContent =
    'Blue edges are positive weights, red negative; thicker and darker is larger |w|. Beside each unit: ' +
    'z, then a (ŷ for the output), to 4 significant digits; the tables below hold every digit. ' +
    'Select a unit (click it, or Tab to it and press Enter) to see its sum worked out; click an edge to edit its weight.' +
    (elided ? ` Layers wider than ${state.desc.max_drawn_units} units are drawn in part; every value is in the tables.` : '');
}

// The edges' colour and width follow the weights shown, edited or not, as show.py draws them.
function paintEdges() {
  if (!state.W) return;
  const largest = Math.max(...state.W.map((W) => Math.max(...W.flat().map(Math.abs)))) || 1;
  for (const line of document.querySelectorAll('#drawing line[data-weight]')) {
    const [l, j, k] = line.dataset.weight.split(':').map(Number);
    const w = state.W[l - 1][j - 1][k - 1];
    const strength = Math.abs(w) / largest;
    line.setAttribute('stroke', w >= 0 ? '#1f5fbf' : '#c0392b');
    line.setAttribute('stroke-width', (0.5 + 3.5 * strength).toFixed(2));
    line.setAttribute('stroke-opacity', (0.15 + 0.85 * strength).toFixed(2));
    const title = line.querySelector('title');
    if (title) title.textContent = `W[${l}][${j},${k}] = ${fmtDrawn(w)}`;
  }
}

// Whether a layer's W[l] or b[l] is too large to show as fields (then: a summary, and the drawing edits).
const tooLarge = (rows, cols) => rows > MATRIX_MAX || cols > MATRIX_MAX;
const summarised = (l) => ({
  W: tooLarge(state.desc.sizes[l], state.desc.sizes[l - 1]),
  b: tooLarge(state.desc.sizes[l], 1),
});

function paramField(kind, l, j, k) {
  const label = kind === 'W' ? `W[${l}][${j},${k}]` : `b[${l}][${j}]`;
  const value = kind === 'W' ? state.W[l - 1][j - 1][k - 1] : state.b[l - 1][j - 1];
  const field = el('input', {
    type: 'number', step: 'any', inputmode: 'decimal', class: 'param', 'aria-label': label, title: label,
    value: brief(value), 'data-param': `${kind}:${l}:${j}:${k || 0}`,
  });
  field.addEventListener('input', () => editParam(field));
  return field;
}

function editParam(field) {
  const [kind, l, j, k] = field.dataset.param.split(':');
  const label = field.getAttribute('aria-label');
  const value = Number(field.value);
  // A weight the model's dtype cannot hold (a float32 beyond 3.4e38) is no weight the model can have.
  const why = field.value.trim() === '' || !Number.isFinite(value) ? 'is not a number'
    : !Number.isFinite(stored(value)) ? `is beyond ${state.desc.dtype}’s range` : '';
  if (!mark(field, label, !why, why)) {
    compute('invalid');
    return;
  }
  if (kind === 'W') state.W[l - 1][j - 1][k - 1] = value;
  else state.b[l - 1][j - 1] = value;
  paintEdges();
  renderWeightsBar();
  compute('weights');
}

// Marks a field valid or not (aria-invalid, and the reason kept for the stale note); says which.
function mark(field, label, ok, why = 'is not a number') {
  if (ok) {
    field.removeAttribute('aria-invalid');
    state.invalid.delete(label);
  } else {
    field.setAttribute('aria-invalid', 'true');
    state.invalid.set(label, `${label} ${why}`);
  }
  return ok;
}

function matrix(name, l, rows, cols, fieldOf) {
  const caption = el('figcaption', {}, sym(name, l), el('span', { class: 'shape' }, ` ${rows} × ${cols}`));
  const body = el('tbody', {});
  for (let j = 1; j <= rows; j++) {
    const row = el('tr', { 'data-row': `${l}:${j}` }); // row j of W[l] and of b[l]: unit j's
    for (let k = 1; k <= cols; k++) row.append(el('td', {}, fieldOf(j, k)));
    body.append(row);
  }
  return el('figure', { class: 'matrix' }, caption, el('table', { 'aria-label': `${name}[${l}], ${rows} × ${cols}` }, body));
}

function summary(name, l, values, rows, cols) {
  const flat = values.flat();
  const mean = flat.reduce((a, v) => a + v, 0) / flat.length;
  const facts = [['min', Math.min(...flat)], ['max', Math.max(...flat)], ['mean', mean]];
  return el(
    'figure', { class: 'matrix summary', 'data-summary': `${name}${l}` },
    el('figcaption', {}, sym(name, l), el('span', { class: 'shape' }, ` ${rows} × ${cols}, larger than ${MATRIX_MAX} × ${MATRIX_MAX}: read-only here`)),
    el('p', {}, ...facts.flatMap(([what, v], n) => [n ? ', ' : '', `${what} `, el('span', { 'data-cell': `summary-${name}${l}-${what}` }, fmtDrawn(v))])),
  );
}

// Each layer: its equations, W[l] and b[l] as the slides shape them (fields to edit, or a summary),
// and its z[l], a[l] as computed, in a table of its own.
function renderLayers() {
  const d = state.desc;
  const blocks = d.activations.map((act, i) => {
    const l = i + 1;
    const id = `layer-${l}`;
    const parts = [el('h3', { id }, `Layer ${l}: ${act}, ${units(d.sizes[l])}`), el('p', {}, ...layerEquations(l, act))];
    if (state.W) {
      const big = summarised(l);
      const rows = d.sizes[l];
      const cols = d.sizes[i];
      const W = big.W ? summary('W', l, state.W[i], rows, cols) : matrix('W', l, rows, cols, (j, k) => paramField('W', l, j, k));
      const b = big.b ? summary('b', l, state.b[i], rows, 1) : matrix('b', l, rows, 1, (j) => paramField('b', l, j));
      const note = big.W || big.b
        ? [el('p', { class: 'note' }, 'Edit these weights through the drawing: click an edge, or select a unit. ',
          unitPicker(l))]
        : [];
      parts.push(
        el('div', { class: 'scroll matrices', tabindex: '0', role: 'region', 'aria-label': `W[${l}] and b[${l}]` }, W, b),
        ...note,
      );
    }
    parts.push(el('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-labelledby': id, 'data-values': String(l) }));
    return el('section', { class: 'layer', 'aria-labelledby': id }, ...parts);
  });
  $('layers').replaceChildren(...blocks);
  markChosenRows();
}

// The selected unit's row of W[l] and b[l], marked: the weights of its sum.
function markChosenRows() {
  const chosen = state.selected ? `${state.selected.layer}:${state.selected.unit}` : '';
  for (const row of document.querySelectorAll('#layers tr[data-row]')) row.classList.toggle('chosen', row.dataset.row === chosen);
}

// For a summarised layer whose units are not all drawn: pick a unit by number to edit its weights.
function unitPicker(l) {
  const id = `pick-${l}`;
  const field = el('input', { id, type: 'number', min: '1', max: String(state.desc.sizes[l]), step: '1', value: '1', class: 'pick' });
  const button = el('button', { type: 'button' }, 'Edit this unit');
  button.addEventListener('click', () => {
    const i = Number(field.value);
    if (Number.isInteger(i) && i >= 1 && i <= state.desc.sizes[l]) selectUnit(l, i, 1);
  });
  return el('span', { class: 'picker' }, el('label', { for: id }, `unit of layer ${l}`), ' ', field, ' ', button);
}

const isX = (label) => /^x\d+$/.test(label); // an invalid x field's label, not a weight's

function isEdited() {
  if (!state.served) return false;
  const same = (a, b) => stored(a) === stored(b);
  return state.W.some((W, l) => W.some((row, j) => row.some((w, k) => !same(w, state.served.W[l][j][k])))) ||
    state.b.some((b, l) => b.some((v, j) => !same(v, state.served.b[l][j])));
}

// The weights' bar: served or edited, Reset, Download, and the command line that uses the download.
function renderWeightsBar() {
  if (!state.served) {
    $('weights-status').textContent = 'This server does not list the weights, so they cannot be shown or edited here.';
    $('reset').hidden = $('download').hidden = true;
    return;
  }
  const edited = isEdited();
  $('reset').hidden = $('download').hidden = false;
  $('reset').disabled = !edited;
  $('weights-status').textContent = edited
    ? 'W and b are edited: everything is computed with them in this browser and by the oracle. ' +
      'The server\u2019s V2 answer is hidden, since the server computes with its file\u2019s weights.'
    : 'W and b are the served file\u2019s. Edit any entry to recompute everything at once.';
  document.body.dataset.edited = String(edited);
}

function resetWeights() {
  state.W = JSON.parse(JSON.stringify(state.served.W));
  state.b = JSON.parse(JSON.stringify(state.served.b));
  for (const label of [...state.invalid.keys()]) if (!isX(label)) state.invalid.delete(label);
  renderLayers();
  paintEdges();
  renderWeightsBar();
  renderUnit();
  renderUnitEditor();
  $('download-how').hidden = true;
  compute('weights');
}

async function downloadWeights() {
  const name = state.entries[$('model').value].name;
  const wrong = [...state.invalid.keys()].filter((label) => !isX(label));
  if (wrong.length) {
    showError(`Nothing downloaded: ${wrong.join(', ')} ${wrong.length > 1 ? 'hold' : 'holds'} no weight yet.`);
    return;
  }
  try {
    const answer = await postJson(modelPath('/network/weights.npz'), {
      W: state.W.map((W) => W.map((row) => row.map(stored))),
      b: state.b.map((b) => b.map(stored)),
    });
    const match = /filename="([^"]+)"/.exec(answer.headers.get('Content-Disposition') || '');
    const file = match ? match[1] : `${name}-edited-weights.npz`;
    const link = el('a', { href: URL.createObjectURL(await answer.blob()), download: file });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    const d = state.desc;
    $('download-command').textContent =
      `forwardpass build --weights ${file} --activations ${d.activations.join(',')} --layout ${d.layout} ` +
      `--dtype ${d.dtype} --name ${name.replace(/[^A-Za-z0-9_.-]/g, '_')}_edited`;
    $('download-how').hidden = false;
    showError('');
  } catch (error) {
    showError(refused('the download', error));
  }
}

function readX() {
  const x = [];
  let ok = true;
  for (let i = 1; i <= state.desc.sizes[0]; i++) {
    const field = $(`x${i}`);
    const value = Number(field.value);
    ok = mark(field, `x${i}`, field.value.trim() !== '' && Number.isFinite(value)) && ok;
    x.push(value);
  }
  return ok ? x : null;
}

function tensorOf(values, shape) {
  const float64 = state.desc.dtype === 'float64';
  const data = float64 ? Float64Array.from(values) : Float32Array.from(values);
  return new ort.Tensor(float64 ? 'float64' : 'float32', data, shape);
}

const columnShape = (n, m) => (state.desc.layout === 'rows' ? [m, n] : [n, m]);

// W{l} [n_l, n_{l-1}] and b{l} [n_l, 1], the editable graph's inputs, from the weights shown.
function weightFeeds() {
  const feeds = {};
  state.W.forEach((W, i) => {
    feeds[`W${i + 1}`] = tensorOf(W.flat(), [W.length, W[0].length]);
    feeds[`b${i + 1}`] = tensorOf(state.b[i], [state.b[i].length, 1]);
  });
  return feeds;
}

// One run at a time: a wasm session does not take a second run while one is going.
function runEditable(feeds) {
  const session = state.session;
  const all = state.served ? { ...weightFeeds(), ...feeds } : feeds;
  const run = state.chain.then(() => session.run(all));
  state.chain = run.catch(() => undefined);
  return run;
}

async function inBrowser(x) {
  if (!state.session) return null;
  const out = await runEditable({ [state.desc.input.name]: tensorOf(x, columnShape(x.length, 1)) });
  const depth = state.desc.sizes.length - 1;
  const layers = [];
  for (let l = 1; l <= depth; l++) {
    const a = l < depth ? `A${l}` : state.desc.output;
    layers.push({ Z: Array.from(out[`Z${l}`].data), A: Array.from(out[a].data) });
  }
  return layers;
}

// Values of an answer's output as numbers, float32 ones rounded back to float32 (JSON carries
// their shortest decimal), and "NaN" / "Infinity" strings read as numbers.
function outputValues(answer, name) {
  const output = answer.outputs.find((o) => o.name === name) || answer.outputs[0];
  const values = output.data.map(Number);
  return { output, values: output.datatype === 'FP32' ? values.map(Math.fround) : values };
}

async function fromServer(x, rows) {
  const n = state.desc.sizes[0];
  const data = state.desc.layout === 'rows' ? rows.flat() : x.map((_, i) => rows.map((row) => row[i])).flat();
  const body = {
    inputs: [{ name: state.desc.input.name, shape: columnShape(n, rows.length), datatype: state.desc.input.datatype, data }],
  };
  return outputValues(await (await postJson(modelPath('/infer'), body)).json(), state.desc.output);
}

// The oracle's answer with its numbers as numbers ("Infinity" and "NaN" come as strings).
function oracleValues(answer) {
  for (const layer of answer.layers) for (const key of Object.keys(layer)) layer[key] = layer[key].map(Number);
  return answer;
}

async function compute(reason) {
  if (!state.desc) return;
  const seq = ++state.seq; // a newer one wins; an invalid field too stops what is on its way
  const x = readX();
  if (!x || state.invalid.size) {
    markStale(true);
    notify('invalid');
    return;
  }
  state.x = x;
  notify(reason);
  const edited = isEdited();
  const weights = edited ? { W: state.W.map((W) => W.map((row) => row.map(stored))), b: state.b.map((b) => b.map(stored)) } : {};
  state.pending += 1;
  document.body.dataset.pending = String(state.pending);
  try {
    const [browser, server, oracle] = await Promise.allSettled([
      inBrowser(x),
      edited ? Promise.resolve(null) : fromServer(x, [x]), // the server computes with its own weights only
      postJson(modelPath('/network/oracle'), { x, ...weights }).then((r) => r.json()).then(oracleValues),
    ]);
    if (seq !== state.seq) return; // a newer x is on its way
    const errors = [];
    if (browser.status === 'rejected') errors.push(`onnxruntime-web failed: ${browser.reason.message || browser.reason}`);
    if (server.status === 'rejected') errors.push(refused('the inference', server.reason));
    if (oracle.status === 'rejected') errors.push(refused('the oracle', oracle.reason));
    showError(errors.join(' '));
    render(x, browser.value || null, server.value || null, oracle.value || null, edited);
    markStale(false);
  } finally {
    state.pending -= 1;
    document.body.dataset.pending = String(state.pending);
  }
}

// While a field is invalid every result is for the last valid input: dimmed, and said so.
function markStale(stale) {
  for (const id of RESULTS) $(id).classList.toggle('stale', stale);
  for (const box of document.querySelectorAll('#layers [data-values]')) box.classList.toggle('stale', stale);
  const note = $('stale-note');
  note.hidden = !stale;
  note.textContent = stale
    ? `${[...state.invalid.values()].join('; ')}: every result below is stale (for the last valid input) until it is.`
    : '';
  document.body.dataset.stale = String(stale);
}

function cell(text, key, extra = {}) {
  return el('td', { 'data-cell': key, ...extra }, text);
}

function render(x, browser, server, oracle, edited) {
  const depth = state.desc.sizes.length - 1;
  state.shown = { x, browser, oracle };
  renderAnswers(depth, browser, server, oracle, edited);
  renderLayerValues(depth, browser, oracle);
  const values = browser || (oracle && oracle.layers);
  x.forEach((v, i) => setText(`drawing-x-${i + 1}`, fmtDrawn(v)));
  for (let l = 1; l <= depth; l++) {
    for (let i = 0; i < state.desc.sizes[l]; i++) {
      setText(`drawing-Z${l}-${i + 1}`, values ? `z ${fmtDrawn(values[l - 1].Z[i])}` : '');
      setText(`drawing-A${l}-${i + 1}`, values ? `${l === depth ? 'ŷ' : 'a'} ${fmtDrawn(values[l - 1].A[i])}` : '');
    }
  }
  const y = values ? values[depth - 1].A : server ? server.values : null;
  $('summary').textContent = y ? `ŷ = ${y.map(fmt).join(', ')}` : '';
  $('output-note').textContent =
    (edited ? 'Computed with the edited W and b by onnxruntime-web in this browser and by the float64 oracle'
      : 'Computed by onnxruntime-web in this browser, by the server over V2 REST, and by the float64 oracle') +
    '; each difference also as a share of the error bound of the model\u2019s dtype. ' +
    (browser ? 'The drawing shows onnxruntime-web\u2019s values.' : 'The drawing shows the oracle\u2019s values.');
  $('server-note').hidden = !edited;
  renderUnit();
}

function setText(key, text) {
  const node = document.querySelector(`#drawing [data-cell="${key}"]`);
  if (node) node.textContent = text;
}

function verdict(ok) {
  return ok ? el('td', { class: 'ok' }, 'within bound') : el('td', { class: 'bad' }, 'OUTSIDE bound');
}

function renderAnswers(depth, browser, server, oracle, edited) {
  const last = oracle ? oracle.layers[depth - 1] : null;
  const columns = edited
    ? ['unit', 'browser', 'oracle', '|browser − oracle|', 'bound', 'verdict']
    : ['unit', 'browser', 'server', 'oracle', '|browser − oracle|', '|server − oracle|', 'bound', 'verdict'];
  const head = el('tr', {}, ...columns.map((t) => el('th', { scope: 'col' }, t)));
  const rows = [];
  for (let i = 0; i < state.desc.sizes[depth]; i++) {
    const b = browser ? browser[depth - 1].A[i] : undefined;
    const s = server ? server.values[i] : undefined;
    const o = last ? last.A[i] : undefined;
    const bound = last ? last.A_bound[i] : undefined;
    const compared = edited ? [b] : [b, s];
    const diffs = compared.map((v) => (v === undefined || o === undefined ? undefined : Math.abs(v - o)));
    const present = diffs.filter((d) => d !== undefined);
    const diffCell = (d, key) => cell(d === undefined ? '–' : `${small(d)} (${share(d, bound)})`, key);
    rows.push(
      el(
        'tr', {},
        el('th', { scope: 'row' }, unitSym(depth, i + 1)),
        cell(fmt(b), `browser-y-${i + 1}`),
        ...(edited ? [] : [cell(fmt(s), `server-y-${i + 1}`)]),
        cell(fmt(o), `oracle-y-${i + 1}`),
        diffCell(diffs[0], `diff-browser-y-${i + 1}`),
        ...(edited ? [] : [diffCell(diffs[1], `diff-server-y-${i + 1}`)]),
        cell(bound === undefined ? '–' : small(bound), `bound-y-${i + 1}`),
        present.length ? verdict(present.every((d) => d <= bound)) : el('td', {}, '–'),
      ),
    );
  }
  $('answers').replaceChildren(
    el('caption', {}, sym('ŷ'), ' for this ', sym('x')),
    el('thead', {}, head),
    el('tbody', {}, ...rows),
  );
}

function renderLayerValues(depth, browser, oracle) {
  for (let l = 1; l <= depth; l++) {
    const ours = browser ? browser[l - 1] : null;
    const theirs = oracle ? oracle.layers[l - 1] : null;
    const a = l === depth ? sym('ŷ') : sym('a', l);
    const head = el(
      'tr', {}, el('th', { scope: 'col' }, 'unit'),
      ...[[sym('z', l), ' browser'], [sym('z', l), ' oracle'], ['of bound'], [a, ' browser'], [a.cloneNode(true), ' oracle'], ['of bound']]
        .map((parts) => el('th', { scope: 'col' }, ...parts.map((p) => (p instanceof Node ? p.cloneNode(true) : p)))),
    );
    const rows = [];
    for (let i = 0; i < state.desc.sizes[l]; i++) {
      const part = (kind) => {
        const b = ours ? ours[kind][i] : undefined;
        const o = theirs ? theirs[kind][i] : undefined;
        const ratio = b === undefined || o === undefined ? '–' : share(Math.abs(b - o), theirs[`${kind}_bound`][i]);
        return [cell(fmt(b), `browser-${kind}${l}-${i + 1}`), cell(fmt(o), `oracle-${kind}${l}-${i + 1}`), cell(ratio, `share-${kind}${l}-${i + 1}`)];
      };
      rows.push(el('tr', {}, el('th', { scope: 'row' }, unitSym(l, i + 1)), ...part('Z'), ...part('A')));
    }
    const box = document.querySelector(`#layers [data-values="${l}"]`);
    box.replaceChildren(el('table', { class: 'numbers' },
      el('caption', {}, sym('z', l), ' and ', l === depth ? sym('a', l) : sym('a', l), l === depth ? ' = ŷ' : '', ' for this ', sym('x')),
      el('thead', {}, head), el('tbody', {}, ...rows)));
  }
}

function selectUnit(l, i, weight = null) {
  state.selected = { layer: l, unit: i };
  for (const circle of document.querySelectorAll('#drawing circle[data-unit]')) {
    circle.setAttribute('aria-pressed', String(circle.dataset.unit === `${l}:${i}`));
  }
  markChosenRows();
  renderUnit();
  renderUnitEditor();
  notify('unit');
  if (weight !== null && l > 0) {
    const field = document.querySelector(`input.param[aria-label="W[${l}][${i},${weight}]"]`);
    if (field) {
      field.scrollIntoView({ block: 'nearest' });
      field.focus();
      field.select();
    }
  }
}

// One unit worked out with its numbers, as a student writes it:
// z[1]_2 = w21·x1 + w22·x2 + w23·x3 + b2 = (0.5)(0.1) + ... + 0.1 = ..., then a[1]_2 = relu(z[1]_2) = ...
function renderUnit() {
  const box = $('unit');
  const chosen = state.selected;
  if (!chosen || !state.desc) {
    box.replaceChildren(el('p', { class: 'note' }, 'Select a unit in the drawing (click it, or Tab to it and press Enter) to see its sum worked out here.'));
    return;
  }
  const { layer: l, unit: j } = chosen;
  const shown = state.shown;
  const depth = state.desc.sizes.length - 1;
  if (l === 0) {
    box.replaceChildren(el('p', { class: 'work' }, unitSym(0, j), ` = ${shown ? shown.x[j - 1] : '–'}: an input, typed above.`));
    return;
  }
  const n = state.desc.sizes[l - 1];
  const values = shown && (shown.browser || (shown.oracle && shown.oracle.layers));
  const before = (k) => (l === 1 ? (shown ? shown.x[k - 1] : undefined) : values ? values[l - 2].A[k - 1] : undefined);
  const sep = j > 9 || n > 9 ? ',' : '';
  const w = (k) => state.W[l - 1][j - 1][k - 1];
  const bias = state.b[l - 1][j - 1];
  const terms = (each) => Array.from({ length: n }, (_, k) => each(k + 1)).flatMap((t, k) => (k ? [' + ', t] : [t]));
  const z = sym('z', l, j);
  const symbolic = el('p', { class: 'work' }, z, ' = ',
    ...terms((k) => el('span', { class: 'term' }, sym('w', null, `${j}${sep}${k}`), '·', unitSym(l - 1, k))), ' + ', sym('b', null, j));
  const num = (v) => (v === undefined ? '–' : v < 0 ? `(${fmtDrawn(v)})` : fmtDrawn(v));
  const numbers = el('p', { class: 'work' }, ' = ',
    ...terms((k) => el('span', { class: 'term' }, `${num(w(k))}·${num(before(k))}`)), ' + ', el('span', { class: 'term' }, num(bias)));
  const products = el('p', { class: 'work' }, ' = ',
    ...terms((k) => el('span', { class: 'term' }, before(k) === undefined ? '–' : num(w(k) * before(k)))), ' + ',
    el('span', { class: 'term' }, num(bias)));
  const zValue = values ? values[l - 1].Z[j - 1] : undefined;
  const aValue = values ? values[l - 1].A[j - 1] : undefined;
  const total = el('p', { class: 'work' }, ' = ', el('strong', { 'data-cell': 'unit-z' }, fmt(zValue)));
  const act = state.desc.activations[l - 1];
  const a = l === depth ? sym('ŷ', null, j) : sym('a', l, j);
  const activation = act === 'softmax'
    ? el('p', { class: 'work' }, a, ' = softmax(', sym('z', l), ')', el('sub', {}, String(j)), ` = exp(`, z.cloneNode(true),
      ') / Σ', el('sub', {}, 'k'), ' exp(', sym('z', l, 'k'), ') = ', el('strong', { 'data-cell': 'unit-a' }, fmt(aValue)))
    : el('p', { class: 'work' }, a, ' = ', ...applied(act, z.cloneNode(true)), ' = ', el('strong', { 'data-cell': 'unit-a' }, fmt(aValue)));
  const parts = [el('h3', {}, 'Unit ', unitSym(l, j), ` of layer ${l}`), symbolic, numbers];
  if (n > 1) parts.push(products);
  parts.push(total, activation);
  parts.push(el('p', { class: 'note' }, 'w', el('sub', {}, `${j}${sep}k`), ` is W[${l}][${j},k], row ${j} of W[${l}]. `,
    'Weights, inputs and products to 4 significant digits; z and a to every digit, as ',
    values === (shown && shown.browser) ? 'onnxruntime-web computed them.' : 'the oracle computed them.'));
  box.replaceChildren(...parts);
}

// The selected unit's weights and bias as fields, where its layer's W[l] or b[l] is too large to
// show as fields: the drawing is then the way to edit them. Rendered on selection only, so that a
// field keeps its focus while the values it changes are rendered again.
function renderUnitEditor() {
  const box = $('unit-editor');
  const chosen = state.selected;
  const big = chosen && chosen.layer > 0 && state.W ? summarised(chosen.layer) : null;
  if (!big || (!big.W && !big.b)) {
    box.replaceChildren();
    box.hidden = true;
    return;
  }
  const { layer: l, unit: j } = chosen;
  const labelled = (text, field) => el('span', { class: 'param-label' }, text, field);
  const fields = [];
  if (big.W) for (let k = 1; k <= state.desc.sizes[l - 1]; k++) fields.push(labelled(`W[${l}][${j},${k}]`, paramField('W', l, j, k)));
  if (big.b) fields.push(labelled(`b[${l}][${j}]`, paramField('b', l, j)));
  box.replaceChildren(el('h4', {}, 'Edit the weights of ', unitSym(l, j)), el('div', { class: 'fields' }, ...fields));
  box.hidden = false;
}

function parseBatch(text) {
  const n = state.desc.sizes[0];
  const rows = text.split('\n').map((line) => line.trim()).filter((line) => line && !line.startsWith('#'));
  if (!rows.length) throw new Error('the batch is empty: one example per row, values separated by commas');
  return rows.map((line, r) => {
    const values = line.split(/[,;\s]+/).filter(Boolean).map(Number);
    if (values.length !== n) throw new Error(`batch row ${r + 1} has ${values.length} values; the model takes ${n}`);
    if (!values.every(Number.isFinite)) throw new Error(`batch row ${r + 1} holds something that is not a number`);
    return values;
  });
}

async function runBatch(event) {
  event.preventDefault();
  let rows;
  try {
    rows = parseBatch($('batch').value);
  } catch (error) {
    showError(error.message, 'batch-error');
    return;
  }
  try {
    const { output, values } = await fromServer(rows[0], rows);
    const m = rows.length;
    const k = values.length / m;
    const at = (r, c) => (state.desc.layout === 'rows' ? values[r * k + c] : values[c * m + r]);
    const head = el('tr', {}, el('th', { scope: 'col' }, 'row'),
      ...Array.from({ length: k }, (_, c) => el('th', { scope: 'col' }, `${output.name}${c + 1}`)));
    const body = rows.map((_, r) =>
      el('tr', {}, el('th', { scope: 'row' }, String(r + 1)),
        ...Array.from({ length: k }, (_, c) => cell(fmt(at(r, c)), `batch-${r + 1}-${c + 1}`))));
    $('batch-out').replaceChildren(el('caption', {}, `The server's answer for ${m} rows`), el('thead', {}, head), el('tbody', {}, ...body));
    showError('', 'batch-error');
  } catch (error) {
    $('batch-out').replaceChildren();
    showError(refused('the batch', error), 'batch-error');
  }
}

async function start() {
  showError('');
  try {
    await loadModels();
    await selectModel();
  } catch (error) {
    showError(error instanceof ServerError && error.status === 401
      ? 'This server needs a token: enter it above.'
      : refused('the page\u2019s request', error));
  }
}

$('model').addEventListener('change', () => selectModel().catch((error) => showError(refused('the model', error))));
$('batch-form').addEventListener('submit', runBatch);
$('reset').addEventListener('click', resetWeights);
$('download').addEventListener('click', downloadWeights);
$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  $('token-form').hidden = true;
  start();
});
document.body.dataset.pending = '0';
await loadRuntime();
await start();
