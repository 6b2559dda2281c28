// The page of `forwardpass serve`: pick a model, type x, and see every Z[l] and A[l] computed three
// ways: by onnxruntime-web in this browser (on the server's copy of the network with its hidden
// outputs), by the server over the V2 REST API, and by the server's float64 oracle, whose error
// bound (forwardpass/tolerance.py) judges the other two. Nothing numeric is computed here but the
// differences shown. Every text from the server (model names, messages) goes in as text, never HTML.

// Hooks for the page's other modules (web/batch.js, web/landscape.js), on window.forwardpassPage:
//
//   forwardpassPage.onChange(fn)  calls fn(view, reason) whenever the model, W, b, x or the selected
//                                 unit changes; reason is 'model', 'weights', 'x', 'unit' or 'invalid'
//                                 (a field was made invalid). Called at once too if a model is shown.
//   forwardpassPage.state()       the current view, or null before a model is shown:
//     model      the GET .../network description (sizes, activations, layout, dtype, input, output...)
//     path(s)    '/v2/models/{m}/versions/{v}' + s for the shown model version
//     W          [W[1], ..., W[L]]: W[l] as n[l] rows of n[l-1] numbers (edited or served), so W[l]
//                is state().W[l - 1]
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

const TOKEN_KEY = 'forwardpass.token';
const SLIDER = { min: -3, max: 3, step: 0.01 };
const VALUE_GAP = 4; // px between a circle and the values written beside it
const EXTRA_WIDTH = 120; // room at the right of the drawing for the last column's values

const $ = (id) => document.getElementById(id);
const state = { entries: [], desc: null, session: null, chain: Promise.resolve(), seq: 0, pending: 0, selections: 0 };
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

function svgText(x, y, text, cell) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', 'text');
  for (const [key, value] of Object.entries({ x, y, class: 'value', 'data-cell': cell })) node.setAttribute(key, value);
  node.textContent = text;
  return node;
}

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
// The drawing has room for 9 digits beside each unit whatever the dtype; the tables show them all.
const fmtDrawn = (v) => (Number.isFinite(v) ? v.toPrecision(9) : String(v));
const small = (v) => (Number.isFinite(v) ? v.toExponential(2) : String(v));
const share = (diff, bound) => (bound > 0 ? `${((100 * diff) / bound).toPrecision(2)}%` : diff === 0 ? '0%' : '∞');

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
      'The server\u2019s answers are shown below.';
  }
}

const clip = (text, length = 60) => (text.length > length ? `${text.slice(0, length - 1)}…` : text);
const units = (n) => `${n} unit${n === 1 ? '' : 's'}`;

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
  renderModel();
  let cannotRun = '';
  if (ort) {
    const bytes = new Uint8Array(await (await api(modelPath('/network/model.onnx'))).arrayBuffer());
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
  await compute();
  if (cannotRun) showError(cannotRun);
  document.body.dataset.shown = `${entry.name}/${entry.version}`; // tests wait for it
}

function renderModel() {
  const d = state.desc;
  const shape = `[${d.input.shape.join(', ')}]`;
  $('facts').textContent =
    `${d.sizes.join('-')} network, ${d.layout} layout, ${d.dtype}; input ${d.input.name} ${shape} ` +
    `(${d.input.datatype}). Error bound: ${d.tolerance.mode}, u = ${small(d.tolerance.unit)} (${d.tolerance.reason}).`;
  $('equations').replaceChildren(
    ...d.activations.map((act, i) => {
      const l = i + 1;
      const prev = l === 1 ? 'A[0] = x' : `A[${l - 1}]`;
      return el(
        'li',
        {},
        el('span', { class: 'eq' }, `Z[${l}] = W[${l}] ${l === 1 ? 'x' : `A[${l - 1}]`} + b[${l}]`),
        el('span', { class: 'eq' }, `A[${l}] = ${act}(Z[${l}])`),
        el('span', { class: 'shape' }, `W[${l}]: ${d.sizes[l]} × ${d.sizes[i]}, b[${l}]: ${d.sizes[l]} × 1, from ${prev}`),
      );
    }),
  );
  renderInputs();
  renderDrawing();
  $('batch').value = [defaultX(), defaultX().map((v) => -v)].map((row) => row.join(', ')).join('\n');
  $('batch-out').replaceChildren();
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
      if (number.value !== '' && Number(number.value) >= SLIDER.min && Number(number.value) <= SLIDER.max) {
        slider.value = number.value;
      }
      compute();
    });
    slider.addEventListener('input', () => {
      number.value = slider.value;
      compute();
    });
    return el('div', { class: 'input-row' }, el('label', { for: name }, name), number, slider);
  });
  $('inputs').replaceChildren(...rows);
}

function renderDrawing() {
  const svg = new DOMParser().parseFromString(state.desc.svg, 'image/svg+xml').documentElement;
  const [, , width, height] = svg.getAttribute('viewBox').split(' ').map(Number);
  svg.setAttribute('viewBox', `0 0 ${width + EXTRA_WIDTH} ${height}`);
  svg.removeAttribute('width');
  svg.removeAttribute('height');
  // In rem, so that it grows with the type (larger on a projector), and never huge.
  svg.style.maxWidth = `${(1.6 * (width + EXTRA_WIDTH)) / 16}rem`;
  svg.querySelector('rect').setAttribute('width', String(width + EXTRA_WIDTH));
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `The ${state.desc.sizes.join('-')} network: each unit's values are in the tables below`);
  for (const circle of svg.querySelectorAll('circle[data-unit]')) {
    const [l, i] = circle.dataset.unit.split(':');
    const x = Number(circle.getAttribute('cx')) + Number(circle.getAttribute('r')) + VALUE_GAP;
    const y = Number(circle.getAttribute('cy'));
    if (l === '0') {
      svg.append(svgText(x, y + 4, '', `drawing-x-${i}`));
    } else {
      svg.append(svgText(x, y - 4, '', `drawing-Z${l}-${i}`), svgText(x, y + 12, '', `drawing-A${l}-${i}`));
    }
  }
  $('drawing').replaceChildren(document.importNode(svg, true));
  const elided = state.desc.sizes.some((n) => n > state.desc.max_drawn_units);
  $('drawing-caption').textContent =
    'Blue edges are positive weights, red negative; thicker and darker is larger |w|. Beside each unit: z, then a.' +
    (elided ? ` Layers wider than ${state.desc.max_drawn_units} units are drawn in part; every value is in the tables.` : '');
}

function readX() {
  const x = [];
  for (let i = 1; i <= state.desc.sizes[0]; i++) {
    const field = $(`x${i}`);
    const value = Number(field.value);
    if (field.value.trim() === '' || !Number.isFinite(value)) throw new Error(`x${i} is not a number`);
    x.push(value);
  }
  return x;
}

function tensorOf(values, shape) {
  const float64 = state.desc.dtype === 'float64';
  const data = float64 ? Float64Array.from(values) : Float32Array.from(values);
  return new ort.Tensor(float64 ? 'float64' : 'float32', data, shape);
}

const columnShape = (n, m) => (state.desc.layout === 'rows' ? [m, n] : [n, m]);

async function inBrowser(x) {
  const session = state.session;
  if (!session) return null;
  const feeds = { [state.desc.input.name]: tensorOf(x, columnShape(x.length, 1)) };
  // One run at a time: a wasm session does not take a second run while one is going.
  const run = state.chain.then(() => session.run(feeds));
  state.chain = run.catch(() => undefined);
  const out = await run;
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

async function compute() {
  if (!state.desc) return;
  const seq = ++state.seq;
  let x;
  try {
    x = readX();
  } catch (error) {
    showError(error.message);
    return;
  }
  state.pending += 1;
  document.body.dataset.pending = String(state.pending);
  try {
    const [browser, server, oracle] = await Promise.allSettled([
      inBrowser(x),
      fromServer(x, [x]),
      postJson(modelPath('/network/oracle'), { x }).then((r) => r.json()),
    ]);
    if (seq !== state.seq) return; // a newer x is on its way
    const errors = [];
    if (browser.status === 'rejected') errors.push(`onnxruntime-web failed: ${browser.reason.message || browser.reason}`);
    if (server.status === 'rejected') errors.push(refused('the inference', server.reason));
    if (oracle.status === 'rejected') errors.push(refused('the oracle', oracle.reason));
    showError(errors.join(' '));
    render(x, browser.value || null, server.value || null, oracle.value || null);
  } finally {
    state.pending -= 1;
    document.body.dataset.pending = String(state.pending);
  }
}

function cell(text, key, extra = {}) {
  return el('td', { 'data-cell': key, ...extra }, text);
}

function render(x, browser, server, oracle) {
  const depth = state.desc.sizes.length - 1;
  renderAnswers(depth, browser, server, oracle);
  renderLayers(depth, browser, oracle);
  const shown = browser || (oracle && oracle.layers);
  x.forEach((v, i) => setText(`drawing-x-${i + 1}`, String(v)));
  for (let l = 1; l <= depth; l++) {
    for (let i = 0; i < state.desc.sizes[l]; i++) {
      setText(`drawing-Z${l}-${i + 1}`, shown ? `z ${fmtDrawn(shown[l - 1].Z[i])}` : '');
      setText(`drawing-A${l}-${i + 1}`, shown ? `${l === depth ? 'ŷ' : 'a'} ${fmtDrawn(shown[l - 1].A[i])}` : '');
    }
  }
  const y = browser ? browser[depth - 1].A : server ? server.values : null;
  $('summary').textContent = y ? `y = ${y.map(fmt).join(', ')}` : '';
  $('output-note').textContent =
    'Computed by onnxruntime-web in this browser, by the server over V2 REST, and by the float64 oracle; ' +
    'each difference also as a share of the error bound of the model\u2019s dtype. ' +
    (browser ? 'The drawing shows onnxruntime-web\u2019s values.' : 'The drawing shows the oracle\u2019s values.');
}

function setText(key, text) {
  const node = document.querySelector(`#drawing [data-cell="${key}"]`);
  if (node) node.textContent = text;
}

function verdict(ok) {
  return ok ? el('td', { class: 'ok' }, 'within bound') : el('td', { class: 'bad' }, 'OUTSIDE bound');
}

function renderAnswers(depth, browser, server, oracle) {
  const last = oracle ? oracle.layers[depth - 1] : null;
  const head = el(
    'tr', {},
    ...['unit', 'browser', 'server', 'oracle', '|browser − oracle|', '|server − oracle|', 'bound', 'verdict']
      .map((t) => el('th', { scope: 'col' }, t)),
  );
  const rows = [];
  for (let i = 0; i < state.desc.sizes[depth]; i++) {
    const b = browser ? browser[depth - 1].A[i] : undefined;
    const s = server ? server.values[i] : undefined;
    const o = last ? last.A[i] : undefined;
    const bound = last ? last.A_bound[i] : undefined;
    const diffs = [b, s].map((v) => (v === undefined || o === undefined ? undefined : Math.abs(v - o)));
    const present = diffs.filter((d) => d !== undefined);
    rows.push(
      el(
        'tr', {},
        el('th', { scope: 'row' }, `y${i + 1}`),
        cell(fmt(b), `browser-y-${i + 1}`),
        cell(fmt(s), `server-y-${i + 1}`),
        cell(fmt(o), `oracle-y-${i + 1}`),
        cell(diffs[0] === undefined ? '–' : `${small(diffs[0])} (${share(diffs[0], bound)})`, `diff-browser-y-${i + 1}`),
        cell(diffs[1] === undefined ? '–' : `${small(diffs[1])} (${share(diffs[1], bound)})`, `diff-server-y-${i + 1}`),
        cell(bound === undefined ? '–' : small(bound), `bound-y-${i + 1}`),
        present.length ? verdict(present.every((d) => d <= bound)) : el('td', {}, '–'),
      ),
    );
  }
  $('answers').replaceChildren(
    el('caption', {}, 'y for this x'),
    el('thead', {}, head),
    el('tbody', {}, ...rows),
  );
}

function renderLayers(depth, browser, oracle) {
  const tables = [];
  for (let l = 1; l <= depth; l++) {
    const ours = browser ? browser[l - 1] : null;
    const theirs = oracle ? oracle.layers[l - 1] : null;
    const head = el(
      'tr', {},
      ...['unit', `Z[${l}] browser`, `Z[${l}] oracle`, 'of bound', `A[${l}] browser`, `A[${l}] oracle`, 'of bound']
        .map((t) => el('th', { scope: 'col' }, t)),
    );
    const rows = [];
    for (let i = 0; i < state.desc.sizes[l]; i++) {
      const part = (kind) => {
        const b = ours ? ours[kind][i] : undefined;
        const o = theirs ? theirs[kind][i] : undefined;
        const ratio = b === undefined || o === undefined ? '–' : share(Math.abs(b - o), theirs[`${kind}_bound`][i]);
        return [cell(fmt(b), `browser-${kind}${l}-${i + 1}`), cell(fmt(o), `oracle-${kind}${l}-${i + 1}`), cell(ratio, `share-${kind}${l}-${i + 1}`)];
      };
      rows.push(el('tr', {}, el('th', { scope: 'row' }, String(i + 1)), ...part('Z'), ...part('A')));
    }
    const id = `layer-${l}`;
    tables.push(
      el(
        'div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-labelledby': id },
        el(
          'table', { class: 'numbers' },
          el('caption', { id }, `Layer ${l}: ${state.desc.activations[l - 1]}, ${units(state.desc.sizes[l])}`),
          el('thead', {}, head),
          el('tbody', {}, ...rows),
        ),
      ),
    );
  }
  $('layers').replaceChildren(...tables);
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
$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  $('token-form').hidden = true;
  start();
});
document.body.dataset.pending = '0';
await loadRuntime();
await start();
