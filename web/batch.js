// The batch as the slides write it, and each layer's g drawn.
//
// The CSV batch becomes X (n_x × m), one example per column; each layer then shows
// Z[l] = W[l] A[l-1] + b[l] with b[l] broadcast over the m columns, and A[l] = g(Z[l]), every
// matrix with its shape. The numbers come from onnxruntime-web twice: once as the slides' loop
// "for i = 1 to m" (one run per column) and once in matrix form (one run on all m columns); the page
// states their largest difference, and the float64 oracle (POST .../network/oracle with "X") judges
// the matrix form within the error bound of the model's dtype. Without onnxruntime-web the loop is
// run in float64 here and the matrices are the oracle's.
//
// Below, each layer's g is plotted with the current example's z[l] marked on it, beside the slides'
// advice for that activation. Everything is built as DOM nodes with text children: no innerHTML.
//
// It reads the page through window.forwardpassPage (page.js): onChange(fn) and state().

const SVG = 'http://www.w3.org/2000/svg';
const MATRIX_MAX = 16; // W[l] larger than 16 x 16 is not listed here, as the page summarises it
const TALL_ROWS = 16; // a matrix of more rows scrolls up and down in its own box
const SHOWN_COLUMNS = 64; // more examples are computed and checked, and listed in part
const MAX_EXAMPLES = 4096; // the oracle route's limit on m
const PLOT = { width: 260, height: 170, left: 38, right: 10, top: 10, bottom: 30, samples: 241 };
const LISTED = 8; // values written under a plot; the tables list them all
const TYPING_PAUSE_MS = 300; // recompute once the batch box has been still this long

const $ = (id) => document.getElementById(id);
const view = { plotSeq: 0, batchSeq: 0, pending: 0, timer: 0, pageInvalid: false, batchInvalid: false, missed: false };

// -- small DOM helpers (text children only) --

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function svgEl(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

const digits = (model) => (model.dtype === 'float64' ? 17 : 9);
const fmtWith = (n) => (v) => (v === undefined || v === null ? '–' : Number.isFinite(v) ? v.toPrecision(n) : String(v));
const small = (v) => (Number.isFinite(v) ? v.toExponential(2) : String(v));
// g(z) as the page writes it: "relu" is relu(z), "leaky_relu:0.2" is leaky_relu(z; 0.2).
function applied(act, argument) {
  const [name, parameter] = String(act).split(':');
  return parameter === undefined ? `${name}(${argument})` : `${name}(${argument}; ${parameter})`;
}
const short = (v) => (Number.isFinite(v) ? String(Number(v.toPrecision(4))) : String(v)); // plots: 4 digits

// Text in the slides' notation: the [l] of "Z[1]" raised, the 2 of "z[1]_2" lowered, "x^(i)" as x
// with (i) raised, n_x as n with x lowered.
function notation(text) {
  const parts = [];
  let last = 0;
  for (const found of text.matchAll(/\[(\w+)\](?:_(\w+))?|\^\((\w+)\)|\bn_x\b/g)) {
    parts.push(text.slice(last, found.index));
    const [all, layer, index, example] = found;
    if (all === 'n_x') parts.push('n', el('sub', {}, 'x'));
    else if (example !== undefined) parts.push(el('sup', {}, `(${example})`));
    else parts.push(el('sup', {}, `[${layer}]`), ...(index === undefined ? [] : [el('sub', {}, index)]));
    last = found.index + found[0].length;
  }
  parts.push(text.slice(last));
  return el('span', { class: 'notation' }, ...parts);
}

// -- the batch, read from the page's batch box as the page reads it --

function parseBatch(text) {
  const examples = window.forwardpassPage.parseBatch(text);
  if (examples.length > MAX_EXAMPLES) throw new Error(`the batch has ${examples.length} rows; the matrix view takes ${MAX_EXAMPLES}`);
  return examples;
}

// A matrix is kept as an array of rows: M[i][j] is unit i + 1 of example j + 1, as the slides index.
const columnsOf = (examples) => examples[0].map((_, i) => examples.map((x) => x[i]));
// How far apart two entries are: 0 where they are the same, infinities and NaN included.
const gap = (v, q) => (v === q || (Number.isNaN(v) && Number.isNaN(q)) ? 0 : Math.abs(v - q));
// The largest of many numbers, NaN once met (no Math.max(...): it takes only so many arguments).
const largest = (values) => values.reduce((top, v) => (Number.isNaN(top) || v <= top ? top : v), 0);
const maxGap = (P, Q) => largest(P.flatMap((row, i) => row.map((v, j) => gap(v, Q[i][j]))));

// -- the three computations --

// The page's outputs as matrices, layer l at item l - 1: M[i][j] is unit i + 1 of example j + 1,
// whichever layout the model keeps its examples in (rows: [m, n_l], columns: [n_l, m]).
function layersOf(s, outputs, m) {
  const { sizes, layout, output } = s.model;
  const depth = sizes.length - 1;
  const matrixOf = (tensor, n) => {
    const data = tensor.data;
    const at = layout === 'rows' ? (i, j) => data[j * n + i] : (i, j) => data[i * m + j];
    return Array.from({ length: n }, (_, i) => Array.from({ length: m }, (_, j) => Number(at(i, j))));
  };
  return sizes.slice(1).map((n, k) => ({
    Z: matrixOf(outputs[`Z${k + 1}`], n),
    A: matrixOf(outputs[k + 1 < depth ? `A${k + 1}` : output], n),
  }));
}

// One onnxruntime-web run of the page's graph on X (n_x × m), with the page's current W and b.
async function runOn(s, X) {
  const [n, m] = [X.length, X[0].length];
  const flat = s.model.layout === 'rows' ? X[0].flatMap((_, j) => X.map((row) => row[j])) : X.flat();
  const shape = s.model.layout === 'rows' ? [m, n] : [n, m];
  return layersOf(s, await s.run({ [s.model.input.name]: s.tensor(flat, shape) }), m);
}

// The slides' loop: one example at a time, each a run of its own; the columns put side by side.
// It stops once no longer wanted (newer weights or a newer batch), leaving the runs to the page.
async function loopForm(s, X, wanted) {
  const perExample = [];
  for (let j = 0; j < X[0].length; j++) {
    if (!wanted()) throw new Error('superseded');
    perExample.push(await runOn(s, X.map((row) => [row[j]])));
  }
  const side = (l, kind) => perExample[0][l][kind].map((_, i) => perExample.map((layers) => layers[l][kind][i][0]));
  return perExample[0].map((_, l) => ({ Z: side(l, 'Z'), A: side(l, 'A') }));
}

// The same loop in float64 JavaScript, for a page without onnxruntime-web: z_k = Σ_i w_ki a_i + b_k.
function loopInFloat64(s, X) {
  const m = X[0].length;
  const layers = s.W.map((W) => ({ Z: W.map(() => new Array(m)), A: W.map(() => new Array(m)) }));
  for (let j = 0; j < m; j++) {
    let a = X.map((row) => row[j]);
    s.W.forEach((W, l) => {
      const z = W.map((w, k) => w.reduce((sum, wki, i) => sum + wki * a[i], s.b[l][k]));
      a = activation(s.model.activations[l]).layer(z);
      z.forEach((v, k) => {
        layers[l].Z[k][j] = v;
        layers[l].A[k][j] = a[k];
      });
    });
  }
  return layers;
}

// The float64 oracle for the batch, for the weights shown: n_l × m matrices and their bounds.
async function oracleFor(s, X) {
  const examples = X[0].map((_, j) => X.map((row) => row[j]));
  // Edited weights as the browser computes with them: in the model's dtype.
  const stored = (v) => (s.model.dtype === 'float32' ? Math.fround(v) : v);
  const weights = { W: s.W.map((W) => W.map((row) => row.map(stored))), b: s.b.map((b) => b.map(stored)) };
  const answer = await s.post('/network/oracle', { X: examples, ...(s.edited ? weights : {}) });
  // "Infinity", "-Infinity" and "NaN" come as strings: read them as numbers.
  return answer.layers.map((layer) =>
    Object.fromEntries(Object.entries(layer).map(([key, M]) => [key, M.map((row) => row.map(Number))])),
  );
}

// -- the activations, for the plots and the float64 loop --

function activation(text) {
  const [name, alphaText] = String(text).split(':');
  const alpha = alphaText === undefined ? 0.01 : Number(alphaText);
  const scalar = {
    relu: (z) => Math.max(0, z),
    leaky_relu: (z) => (z >= 0 ? z : alpha * z),
    sigmoid: (z) => 1 / (1 + Math.exp(-z)),
    tanh: Math.tanh,
    identity: (z) => z,
  }[name];
  if (scalar) return { name, scalar, layer: (z) => z.map(scalar) };
  // softmax: each a_k depends on every z; a_k against z_k is drawn with the other z held.
  const layer = (z) => {
    const top = z.reduce((p, q) => Math.max(p, q), -Infinity);
    const e = z.map((v) => Math.exp(v - top));
    const sum = e.reduce((p, q) => p + q, 0);
    return e.map((v) => v / sum);
  };
  return { name, scalar: null, layer };
}

// The slides' advice, one sentence per activation and place.
function advice(name, hidden) {
  if (hidden) {
    return {
      relu: 'ReLU: the slides\u2019 default for hidden layers.',
      leaky_relu: 'Leaky ReLU: a ReLU with a small slope for z < 0, so a unit never stops passing a gradient.',
      tanh: 'tanh in a hidden layer: usually better than sigmoid there (centred on 0), but the slides advise ReLU, keeping sigmoid and tanh for the output only.',
      sigmoid: 'sigmoid in a hidden layer: the slides advise against it (ReLU is the default; tanh is usually better than sigmoid for hidden units); keep sigmoid for a binary output.',
      identity: 'identity in a hidden layer: the two layers collapse into one linear map; the slides use ReLU.',
    }[name] || '';
  }
  return {
    sigmoid: 'sigmoid at the output: the slides\u2019 choice for a binary output, ŷ = P(y = 1 | x) in (0, 1).',
    softmax: 'softmax at the output: one probability per class, summing to 1.',
    tanh: 'tanh at the output: values in (−1, 1); the slides keep sigmoid and tanh for the output only.',
    identity: 'identity at the output: a real-valued prediction (regression).',
    relu: 'ReLU at the output: a prediction that is never negative; ReLU is the slides\u2019 default for hidden layers.',
    leaky_relu: 'leaky ReLU at the output: unusual; the slides use it for hidden layers.',
  }[name] || '';
}

// -- the batch view --

// One matrix as a table under its name and shape; value(i, j) for unit i, example j (0-based).
function matrix(name, shape, rows, columns, value, { key, fmt, columnHead = (j) => `(${j + 1})`, faded = null, bad = null }) {
  const shownColumns = Math.min(columns, SHOWN_COLUMNS);
  const heads = Array.from({ length: shownColumns }, (_, j) => el('th', { scope: 'col' }, ...[].concat(columnHead(j))));
  const body = Array.from({ length: rows }, (_, i) =>
    el(
      'tr', {},
      el('th', { scope: 'row' }, String(i + 1)),
      ...Array.from({ length: shownColumns }, (_, j) => {
        const classes = [faded && faded(j) ? 'copy' : '', bad && bad(i, j) ? 'bad' : ''].filter(Boolean).join(' ');
        return el('td', { 'data-cell': `${key}-${i + 1}-${j + 1}`, ...(classes ? { class: classes } : {}) }, fmt(value(i, j)));
      }),
    ),
  );
  const more = columns > shownColumns ? el('p', { class: 'note' }, `The first ${shownColumns} of ${columns} columns; all are checked.`) : '';
  // A tall matrix scrolls up and down in a box of its own, which the keyboard can reach.
  const tall = rows > TALL_ROWS ? { class: 'matrix-box tall', tabindex: '0', role: 'region', 'aria-label': name } : { class: 'matrix-box' };
  return el(
    'div', { ...tall, 'data-matrix': key, 'data-shape': `${rows}x${columns}` },
    el('table', { class: 'matrix numbers' }, el('caption', {}, notation(`${name}: ${shape}`)), el('thead', {}, el('tr', {}, el('td', {}), ...heads)), el('tbody', {}, ...body)),
    more,
  );
}

const term = (...children) => el('div', { class: 'term' }, ...children); // an operator kept with its operand
const op = (text) => el('span', { class: 'op', 'aria-hidden': 'true' }, text);
const exampleHead = (j) => notation(`x^(${j + 1})`);

// A row of the equation in a box of its own, which scrolls sideways when its matrices are wider.
function scrollBox(label, ...children) {
  return el('div', { class: 'scroll batch-row', tabindex: '0', role: 'region', 'aria-label': label }, ...children);
}

// The worst entry against the oracle (its difference, and as a share of its bound), and whether
// entry (i, j) of layer l + 1's Z or A is outside its bound.
function judge(shown, oracle) {
  if (!oracle) return { worst: null, outside: () => null };
  const entries = shown.flatMap((layer, l) => ['Z', 'A'].flatMap((kind) =>
    layer[kind].flatMap((row, i) => row.map((v, j) => {
      const diff = gap(v, oracle[l][kind][i][j]);
      const bound = oracle[l][`${kind}_bound`][i][j];
      return { diff, share: bound > 0 ? diff / bound : diff === 0 ? 0 : Infinity };
    }))));
  const worst = { diff: largest(entries.map((e) => e.diff)), share: largest(entries.map((e) => e.share)) };
  const outside = (l, kind) => (i, j) => !(gap(shown[l][kind][i][j], oracle[l][kind][i][j]) <= oracle[l][`${kind}_bound`][i][j]);
  return { worst, outside };
}

function layerParts(s, l, m, shown, outside) {
  const fmt = fmtWith(digits(s.model));
  const n = s.model.sizes;
  const { Z, A } = shown[l - 1];
  const [W, b] = [s.W[l - 1], s.b[l - 1]];
  const prev = l === 1 ? 'X' : `A[${l - 1}]`;
  const g = s.model.activations[l - 1];
  const wBox = n[l] <= MATRIX_MAX && n[l - 1] <= MATRIX_MAX
    ? matrix(`W[${l}]`, `${n[l]} × ${n[l - 1]}`, n[l], n[l - 1], (i, j) => W[i][j], { key: `mat-W${l}`, fmt, columnHead: (j) => String(j + 1) })
    : el('p', { class: 'matrix-box', 'data-matrix': `mat-W${l}`, 'data-shape': `${n[l]}x${n[l - 1]}` }, `W[${l}] (${n[l]} × ${n[l - 1]}: too large to list here; summarised above)`);
  return [
    el('h3', {}, notation(`Layer ${l}: Z[${l}] = W[${l}]${prev} + b[${l}], A[${l}] = ${applied(g, `Z[${l}]`)}`)),
    el('p', { class: 'shape' }, notation(`(${n[l]} × ${n[l - 1]})(${n[l - 1]} × ${m}) + (${n[l]} × 1 broadcast to ${n[l]} × ${m}) = ${n[l]} × ${m}. ` +
      `b[${l}] is one column; broadcasting copies it to each of the m columns (the faded copies).`)),
    scrollBox(
      `Z[${l}] = W[${l}]${prev} + b[${l}]`,
      term(wBox, op('·'), el('span', { class: 'name' }, notation(prev))),
      term(op('+'), matrix(`b[${l}] broadcast to ${n[l]} × ${m}`, `from ${n[l]} × 1`, n[l], m, (i) => b[i], { key: `mat-b${l}`, fmt, faded: (j) => j > 0 })),
      term(op('='), matrix(`Z[${l}]`, `${n[l]} × m = ${n[l]} × ${m}`, n[l], m, (i, j) => Z[i][j], { key: `mat-Z${l}`, fmt, bad: outside(l - 1, 'Z') })),
    ),
    scrollBox(
      `A[${l}] = ${applied(g, `Z[${l}]`)}`,
      term(
        el('span', { class: 'name' }, notation(`A[${l}] = ${applied(g, `Z[${l}]`)}`)), op('='),
        matrix(`A[${l}]`, `${n[l]} × m = ${n[l]} × ${m}`, n[l], m, (i, j) => A[i][j], { key: `mat-A${l}`, fmt, bad: outside(l - 1, 'A') }),
      ),
    ),
  ];
}

const code = (text) => el('pre', { class: 'code' }, notation(text));

// The slides' two ways to write the pass, side by side.
function loopAndMatrixForm(activations) {
  const loop = activations.map((g, k) => {
    const before = k ? `a[${k}]^(i)` : 'x^(i)';
    return `    z[${k + 1}]^(i) = W[${k + 1}]${before} + b[${k + 1}]\n    a[${k + 1}]^(i) = ${applied(g, `z[${k + 1}]^(i)`)}`;
  });
  const vectorized = activations.map((g, k) => `Z[${k + 1}] = W[${k + 1}]${k ? `A[${k}]` : 'X'} + b[${k + 1}]\nA[${k + 1}] = ${applied(g, `Z[${k + 1}]`)}`);
  return el(
    'div', { class: 'loop-vs-matrix' },
    el('figure', {}, el('figcaption', {}, 'One example at a time'), code(`for i = 1 to m:\n${loop.join('\n')}`)),
    el('figure', {}, el('figcaption', {}, 'All m at once, examples in columns'), code(vectorized.join('\n'))),
  );
}

function renderBatch(s, X, shown, loopDiff, oracle, how) {
  const m = X[0].length;
  const n = s.model.sizes;
  const { worst, outside } = judge(shown, oracle);
  const parts = [
    el('p', {}, notation(`m = ${m} example${m === 1 ? '' : 's'} from the batch box above, one per column: X = [x^(1) x^(2) … x^(m)], n_x × m = ${n[0]} × ${m}.`)),
    scrollBox('X', matrix('X = A[0]', `n_x × m = ${n[0]} × ${m}`, n[0], m, (i, j) => X[i][j], { key: 'mat-X', fmt: String, columnHead: exampleHead })),
  ];
  for (let l = 1; l < n.length; l++) parts.push(...layerParts(s, l, m, shown, outside));
  parts.push(
    el('h3', {}, 'The loop and the matrix form'),
    loopAndMatrixForm(s.model.activations),
    el('p', { id: 'batch-loop-diff', 'data-diff': String(loopDiff) },
      notation(`${how} Largest |loop − matrix form| over every entry of every Z[l] and A[l]: ${loopDiff === 0 ? '0: the same numbers' : small(loopDiff)}.`)),
  );
  if (worst) {
    const within = worst.share <= 1;
    parts.push(el(
      'p', { id: 'batch-oracle-verdict', class: within ? 'ok' : 'bad' },
      within
        ? `Every entry is within its error bound of the float64 oracle for this batch (largest difference ${small(worst.diff)}; at most ${(100 * worst.share).toPrecision(2)}% of an entry's bound).`
        : `Some entries are OUTSIDE their error bound of the float64 oracle (marked in red; ${small(worst.diff)} at worst).`,
    ));
  }
  $('batch-view-out').replaceChildren(...parts);
}

// -- the activation plots --

// Round-numbered ticks over [lo, hi]: about `count` of them, and never fewer than 3.
function niceTicks(lo, hi, count = 4) {
  const raw = (hi - lo) / count;
  if (!(raw > 0 && Number.isFinite(raw))) return [];
  const power = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((f) => f * power).find((st) => st >= raw) || raw;
  let ticks = [];
  for (let tries = 0; ticks.length < 3 && tries < 4; tries++, step /= 2) {
    ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  }
  return ticks;
}

// A layer's values in a caption: all of a small layer, the first few of a wide one.
const listed = (values) =>
  values.length <= LISTED ? `(${values.map(short).join(', ')})` : `(${values.slice(0, LISTED).map(short).join(', ')}, … ${values.length - LISTED} more)`;

function plot(l, g, z, a, hidden) {
  const act = activation(g);
  const reach = Math.max(4, 1.15 * largest(z.filter(Number.isFinite).map(Math.abs)));
  const [zLo, zHi] = [-reach, reach];
  const zs = Array.from({ length: PLOT.samples }, (_, k) => zLo + ((zHi - zLo) * k) / (PLOT.samples - 1));
  // One curve for a function of z alone; softmax: a_k against z_k, the other z held at their values
  // (the first few units' curves: each costs a softmax per point).
  const curves = act.scalar
    ? [zs.map((v) => [v, act.scalar(v)])]
    : z.slice(0, LISTED).map((_, k) => zs.map((v) => [v, act.layer(z.map((w, q) => (q === k ? v : w)))[k]]));
  const ys = [...curves.flat().map(([, y]) => y), ...a, 0].filter(Number.isFinite);
  let [yLo, yHi] = [-largest(ys.map((y) => -y)), largest(ys)];
  const pad = 0.08 * (yHi - yLo || 1);
  [yLo, yHi] = [yLo - pad, yHi + pad];
  const W = PLOT.width - PLOT.left - PLOT.right;
  const H = PLOT.height - PLOT.top - PLOT.bottom;
  const px = (v) => PLOT.left + ((v - zLo) / (zHi - zLo)) * W;
  const py = (v) => PLOT.top + (1 - (v - yLo) / (yHi - yLo)) * H;
  const svg = svgEl('svg', {
    viewBox: `0 0 ${PLOT.width} ${PLOT.height}`, role: 'img', class: 'g-plot', 'data-layer': l,
    'aria-label': `g[${l}] = ${applied(g, 'z')}, plotted for z from ${short(zLo)} to ${short(zHi)}, with z[${l}]'s ${z.length} current value${z.length === 1 ? '' : 's'} marked`,
  });
  const axes = svgEl('g', { class: 'axes' });
  for (const t of niceTicks(zLo, zHi)) {
    axes.append(svgEl('line', { x1: px(t), x2: px(t), y1: PLOT.top, y2: PLOT.top + H, class: t === 0 ? 'axis' : 'grid' }));
    axes.append(svgEl('text', { x: px(t), y: PLOT.top + H + 12, 'text-anchor': 'middle' }, short(t)));
  }
  for (const t of niceTicks(yLo, yHi, 3)) {
    axes.append(svgEl('line', { x1: PLOT.left, x2: PLOT.left + W, y1: py(t), y2: py(t), class: t === 0 ? 'axis' : 'grid' }));
    axes.append(svgEl('text', { x: PLOT.left - 4, y: py(t) + 3, 'text-anchor': 'end' }, short(t)));
  }
  axes.append(svgEl('text', { x: PLOT.left + W, y: PLOT.height - 2, 'text-anchor': 'end', class: 'label' }, 'z'));
  axes.append(svgEl('text', { x: PLOT.left + 3, y: PLOT.top + 9, class: 'label' }, applied(g, 'z')));
  svg.append(axes);
  for (const curve of curves) {
    const points = curve.filter(([, y]) => Number.isFinite(y)).map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`);
    svg.append(svgEl('polyline', { points: points.join(' '), class: curves.length > 1 ? 'curve each' : 'curve' }));
  }
  const unit = hidden ? `a[${l}]` : 'ŷ';
  z.forEach((v, k) => {
    if (!Number.isFinite(v) || !Number.isFinite(a[k])) return;
    const mark = svgEl('circle', {
      cx: px(v), cy: py(a[k]), r: 4, class: 'mark', 'data-mark': `${l}:${k + 1}`, 'data-z': v, 'data-a': a[k],
    });
    mark.append(svgEl('title', {}, `z[${l}]_${k + 1} = ${short(v)}, ${unit}_${k + 1} = ${short(a[k])}`));
    svg.append(mark);
  });
  const name = hidden ? `a[${l}]` : 'ŷ';
  return el(
    'figure', { class: 'g-figure' },
    svg,
    el(
      'figcaption', {},
      el('strong', {}, `Layer ${l}${hidden ? '' : ' (output)'}: g = ${applied(g, 'z')}. `),
      notation(`z[${l}] = ${listed(z)} → ${name} = ${listed(a)}. `),
      act.scalar ? '' : `Each ${name}_k depends on every z; its curve is drawn against z_k with the other z held${z.length > LISTED ? ` (the first ${LISTED} units' curves)` : ''}. `,
      el('span', { class: 'advice', 'data-advice': act.name }, advice(act.name, hidden)),
    ),
  );
}

function renderPlots(s, layers) {
  const depth = s.model.sizes.length - 1;
  $('activation-plots').replaceChildren(
    ...s.model.activations.map((g, k) => {
      const column = (M) => M.map((row) => row[0]);
      return plot(k + 1, g, column(layers[k].Z), column(layers[k].A), k + 1 < depth);
    }),
  );
}

// -- keeping both in step with the page --

function showError(message, where = 'batch-view-error') {
  const line = $(where);
  line.textContent = message;
  line.hidden = !message;
}

// Stale, with the page's class and look: the plots while a field of the page is invalid, the batch
// view also while the batch box is, or its last computation failed. Set as soon as that changes.
function markStale() {
  $('activation-plots').classList.toggle('stale', view.pageInvalid);
  $('batch-view-out').classList.toggle('stale', view.pageInvalid || view.batchInvalid);
}

// Tests and readers wait for body[data-batch-pending="0"]: no plot or batch computation going on.
async function counted(work) {
  view.pending += 1;
  document.body.dataset.batchPending = String(view.pending);
  try {
    await work();
  } finally {
    view.pending -= 1;
    document.body.dataset.batchPending = String(view.pending);
  }
}

// The current example's z[l] and a[l] for the plots: onnxruntime-web where it runs, float64 here otherwise.
function updatePlots(s) {
  return counted(async () => {
    const seq = ++view.plotSeq;
    const X = s.x.map((v) => [v]);
    const layers = s.run ? await runOn(s, X) : loopInFloat64(s, X);
    if (seq !== view.plotSeq) return;
    renderPlots(s, layers);
  });
}

function updateBatch(s) {
  return counted(async () => {
    const seq = ++view.batchSeq;
    let X;
    const box = $('batch');
    try {
      X = columnsOf(parseBatch(box.value));
      box.removeAttribute('aria-invalid');
      view.batchInvalid = false;
    } catch (error) {
      box.setAttribute('aria-invalid', 'true');
      showError(error.message);
      view.batchInvalid = true;
      return;
    } finally {
      markStale();
    }
    const m = X[0].length;
    const [matrix, loop, oracle] = await Promise.allSettled([
      s.run ? runOn(s, X) : Promise.resolve(null),
      s.run ? loopForm(s, X, () => seq === view.batchSeq) : Promise.resolve(loopInFloat64(s, X)),
      oracleFor(s, X),
    ]);
    if (seq !== view.batchSeq) return; // a newer batch or newer weights are on their way
    const failed = [
      ['onnxruntime-web', matrix], ['the loop', loop], ['the oracle', oracle],
    ].filter(([, r]) => r.status === 'rejected').map(([what, r]) => `${what}: ${r.reason.message || r.reason}`);
    // Without onnxruntime-web the matrices shown are the oracle's.
    const shown = s.run ? matrix.value : oracle.value;
    if (!shown || !loop.value) {
      showError(`The batch could not be computed (${failed.join('; ')}).`);
      view.batchInvalid = true;
      markStale();
      return;
    }
    const diff = largest(shown.flatMap((layer, l) => [maxGap(layer.Z, loop.value[l].Z), maxGap(layer.A, loop.value[l].A)]));
    const how = s.run
      ? `The loop ran onnxruntime-web ${m} time${m === 1 ? '' : 's'}, one column each; the matrix form ran it once on all ${m} columns.`
      : 'onnxruntime-web is not here: the loop ran in float64 in this browser, and the matrix form is the server\u2019s float64 oracle.';
    renderBatch(s, X, shown, diff, s.run ? oracle.value || null : null, how);
    showError(failed.length ? `Part of the batch failed (${failed.join('; ')}).` : '');
  });
}

// The view with its own copy of W and b: the page edits its arrays in place.
const snapshot = (s) => ({ ...s, W: s.W.map((W) => W.map((row) => [...row])), b: s.b.map((b) => [...b]) });

function changed(shown, reason) {
  if (!shown || reason === 'unit') return;
  const s = snapshot(shown);
  view.pageInvalid = !s.valid || reason === 'invalid';
  markStale();
  if (view.pageInvalid) {
    view.missed = true; // W or b may have changed meanwhile
    return;
  }
  updatePlots(s).then(
    () => showError('', 'activations-error'),
    (error) => showError(`The activation plots failed: ${error.message || error}`, 'activations-error'),
  );
  // The batch does not depend on x, but may have missed a change of W or b while a field was invalid.
  if (reason !== 'x' || view.missed) updateBatch(s);
  view.missed = false;
}

function batchChanged() {
  const s = window.forwardpassPage.state();
  if (s && s.valid) updateBatch(snapshot(s));
}

function attach(hook) {
  document.body.dataset.batchPending = '0';
  $('batch').addEventListener('input', () => {
    clearTimeout(view.timer);
    view.timer = setTimeout(batchChanged, TYPING_PAUSE_MS);
  });
  $('batch-form').addEventListener('submit', batchChanged);
  hook.onChange(changed);
}

// page.js sets the hook before its first await; a module loaded first waits for the window's load.
if (window.forwardpassPage) attach(window.forwardpassPage);
else window.addEventListener('load', () => attach(window.forwardpassPage), { once: true });
