"""The page's routes for weights a student edits, over HTTP against a real server: W and b in
GET .../network, the network with W and b as inputs (editable.onnx) run by onnxruntime and by
onnxruntime-web in Chromium, the oracle for given weights and for a batch X, and the .npz that
`forwardpass build --weights` reads, built with the CLI. Every number is checked against the NumPy
oracle within the bound of the model's dtype (forwardpass/tolerance.py)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from urllib.parse import quote

import numpy as np
import onnxruntime
import pytest
from test_http_limits import call
from test_page import HOSTILE, browser, fetch, serving  # noqa: F401 (browser: a fixture)

from forwardpass.builder.graph import build_model, serialize
from forwardpass.builder.oracle import forward
from forwardpass.builder.readback import ReadBack, read_file
from forwardpass.builder.spec import Activation, NetworkSpec
from forwardpass.tolerance import TOLERANCES, layer_bounds

from harness import ROOT, TOKEN, build_into, run_cli
from numerics import random_spec

NAMES = ["mlp_3_4_1", "softmax_4_8_8_3", "columns", "double"]  # rows and columns, float32 and float64
ROUTES = (("GET", "network/editable.onnx"), ("POST", "network/oracle"), ("POST", "network/weights.npz"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """The committed models, a 4-8-8-3 softmax classifier, a columns-layout, a float64 model, and one
    whose name is HTML."""
    repository = tmp_path_factory.mktemp("weights") / "models"
    shutil.copytree(ROOT / "models", repository)
    rng = np.random.default_rng(20)
    relu, tanh, sigmoid = Activation("relu"), Activation("tanh"), Activation("sigmoid")
    build_into(repository, "softmax_4_8_8_3", random_spec(rng, (4, 8, 8, 3), (relu, tanh, Activation("softmax"))))
    build_into(repository, "columns", random_spec(rng, (3, 5, 2), (tanh, sigmoid)), layout="columns")
    build_into(repository, "double", random_spec(rng, (3, 4, 2), (relu, Activation("identity"))), dtype="float64")
    build_into(repository, HOSTILE, random_spec(rng, (2, 2, 1), (relu, sigmoid)))
    return repository


@pytest.fixture(scope="module")
def served(models):
    with serving(models) as process:
        yield process


def post(server, path: str, document: dict, token: str | None = None):
    """(status, headers, body) of a JSON POST."""
    return fetch(server, path, json.dumps(document).encode(), token)


def read_back(models: Path, name: str) -> ReadBack:
    return read_file(models / name / "1" / "model.onnx")


def other_weights(spec: NetworkSpec, seed: int) -> dict:
    """Weights of the spec's shapes that are not its own, as the page sends them: {"W": ..., "b": ...}."""
    edited = random_spec(np.random.default_rng(seed), spec.sizes, spec.activations)
    return {"W": [W.tolist() for W in edited.weights], "b": [b[:, 0].tolist() for b in edited.biases]}


def with_weights(spec: NetworkSpec, document: dict) -> NetworkSpec:
    """The spec with a request's (or GET .../network's) W and b."""
    biases = tuple(np.asarray(b, dtype=np.float64).reshape(-1, 1) for b in document["b"])
    return NetworkSpec(spec.sizes, spec.activations, tuple(np.asarray(W) for W in document["W"]), biases)


def fed_weights(document: dict, dtype: str) -> dict[str, np.ndarray]:
    """W1, b1, ... as editable.onnx takes them: the slides' shapes, b a column, in the model's dtype."""
    fed = {}
    for l, (W, b) in enumerate(zip(document["W"], document["b"]), 1):
        fed[f"W{l}"] = np.asarray(W, dtype=dtype)
        fed[f"b{l}"] = np.asarray(b, dtype=dtype).reshape(-1, 1)
    return fed


def run(session: onnxruntime.InferenceSession, back: ReadBack, X: np.ndarray, extra: dict | None = None) -> dict:
    """Every output of a session for X in columns (n0, m), each as the slides' (n_l, m)."""
    fed = X.T if back.layout == "rows" else X
    answers = session.run(None, {back.input_name: np.ascontiguousarray(fed, dtype=back.dtype), **(extra or {})})
    names = [o.name for o in session.get_outputs()]
    return {n: (a.T if back.layout == "rows" else a) for n, a in zip(names, answers)}


def assert_oracle_answer(answer: dict, spec: NetworkSpec, X: np.ndarray, dtype: str) -> None:
    """The route's Z[l], A[l] (n_l x m) are the oracle's for these weights and X, and its bounds the
    tolerance module's. The server's NumPy may not be this one and float64 sums may round otherwise:
    each oracle is within the float64 bound of the exact value, so they agree within twice it."""
    passed = forward(spec, X)
    exact_Z, exact_A = layer_bounds(spec, X, TOLERANCES["float64"].unit, passed)
    err_Z, err_A = layer_bounds(spec, X, TOLERANCES[dtype].unit, passed)
    assert len(answer["layers"]) == spec.depth
    for l, layer in enumerate(answer["layers"], 1):
        for key, want, exact, bound in (("Z", passed.Z, exact_Z, err_Z), ("A", passed.A, exact_A, err_A)):
            assert np.all(np.abs(np.array(layer[key]) - want[l]) <= 2 * exact[l]), (l, key)
            np.testing.assert_allclose(layer[f"{key}_bound"], bound[l], rtol=1e-12, atol=0)


def assert_within_answer(outputs: dict, answer: dict, back: ReadBack) -> None:
    """A runtime's every Z[l], A[l] within the oracle route's bounds."""
    for l, layer in enumerate(answer["layers"], 1):
        a = back.output_name if l == back.spec.depth else f"A{l}"
        for got, key in ((outputs[f"Z{l}"], "Z"), (outputs[a], "A")):
            error = np.abs(got.astype(np.float64) - np.array(layer[key]))
            assert np.all(error <= np.array(layer[f"{key}_bound"])), (l, key, error)


@pytest.mark.parametrize("name", NAMES)
def test_network_lists_the_served_w_and_b_in_the_slides_shapes(served, models, name):
    status, _, body = fetch(served, f"/v2/models/{name}/network")
    assert status == 200
    weights, spec = json.loads(body)["weights"], read_back(models, name).spec
    assert len(weights) == spec.depth
    for l, item in enumerate(weights, 1):
        assert np.array(item["W"]).shape == spec.shape_of(f"W{l}") and len(item["b"]) == spec.sizes[l]
        np.testing.assert_array_equal(item["W"], spec.weights[l - 1])  # the stored values, exactly
        np.testing.assert_array_equal(item["b"], spec.biases[l - 1][:, 0])


@pytest.mark.parametrize("name", NAMES)
def test_editable_model_computes_model_onnx_for_the_served_weights_and_the_oracle_for_others(served, models, name):
    path = f"/v2/models/{name}/versions/1/network/editable.onnx"
    status, headers, data = fetch(served, path)
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    assert fetch(served, f"/v2/models/{name}/network/editable.onnx")[2] == data  # the latest is version 1
    back = read_back(models, name)
    options = dataclasses.replace(back.options, expose_hidden=True, weights_as_inputs=True)
    assert data == serialize(build_model(back.spec, options, name=name))  # deterministic, from the read-back spec
    editable = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    hidden_data = fetch(served, f"/v2/models/{name}/network/model.onnx")[2]
    # onnxruntime packs model.onnx's stored W for its Gemm kernel, whose sums for one row of a rows
    # model may round a last float32 bit otherwise: unpacked, both run the same kernel.
    unpacked = onnxruntime.SessionOptions()
    unpacked.add_session_config_entry("session.disable_prepacking", "1")
    hidden = onnxruntime.InferenceSession(hidden_data, unpacked, providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in editable.get_inputs()] == [(i.name, i.shape) for i in hidden.get_inputs()] + [
        (f"{k}{l}", list(back.spec.shape_of(f"{k}{l}"))) for l in range(1, back.spec.depth + 1) for k in "Wb"
    ]
    assert [o.name for o in editable.get_outputs()] == [o.name for o in hidden.get_outputs()]

    served_weights = {
        key: [item[key] for item in json.loads(fetch(served, f"/v2/models/{name}/network")[2])["weights"]]
        for key in ("W", "b")
    }
    rng = np.random.default_rng(3)
    for m in (1, 5):
        X = rng.standard_normal((back.spec.sizes[0], m)).astype(back.dtype).astype(np.float64)
        got = run(editable, back, X, fed_weights(served_weights, back.dtype))
        for output, want in run(hidden, back, X).items():
            np.testing.assert_array_equal(got[output], want, err_msg=output)  # bit for bit

        edited = other_weights(back.spec, seed=m)
        status, _, body = post(served, f"/v2/models/{name}/network/oracle", {"X": X.T.tolist(), **edited})
        assert status == 200, body
        answer = json.loads(body)
        assert_oracle_answer(answer, with_weights(back.spec, edited), X, back.dtype)
        assert_within_answer(run(editable, back, X, fed_weights(edited, back.dtype)), answer, back)


def test_oracle_route_answers_a_batch_as_the_slides_matrices(served, models):
    back = read_back(models, "softmax_4_8_8_3")
    examples = [[0.1, -0.2, 0.3, 4.0], [1.0, 2.0, -3.0, 0.5], [0.0, 0.0, 0.0, 0.0]]
    status, _, body = post(served, "/v2/models/softmax_4_8_8_3/network/oracle", {"X": examples})
    assert status == 200, body
    answer = json.loads(body)
    X = np.array(examples).T  # the slides' X: one column per example
    assert answer["X"] == X.tolist() and answer["mode"] == "float32"
    for l, layer in enumerate(answer["layers"], 1):
        assert all(np.array(layer[key]).shape == (back.spec.sizes[l], 3) for key in ("Z", "A", "Z_bound", "A_bound"))
    assert_oracle_answer(answer, back.spec, X, "float32")
    # each column is what the route answers for that example alone
    single = json.loads(post(served, "/v2/models/softmax_4_8_8_3/network/oracle", {"x": examples[1]})[2])
    exact = layer_bounds(back.spec, X, TOLERANCES["float64"].unit)[1]
    for l, (layer, alone) in enumerate(zip(answer["layers"], single["layers"]), 1):
        assert np.all(np.abs(np.array(layer["A"])[:, 1] - alone["A"]) <= 2 * exact[l][:, 1])


def test_oracle_route_takes_up_to_4096_examples(served):
    rng = np.random.default_rng(4)
    largest = rng.standard_normal((4096, 3)).round(6).tolist()  # the landscape's 64 x 64 plane
    status, _, body = post(served, "/v2/models/mlp_3_4_1/network/oracle", {"X": largest})
    assert status == 200 and np.array(json.loads(body)["layers"][1]["A"]).shape == (1, 4096)
    status, _, body = post(served, "/v2/models/mlp_3_4_1/network/oracle", {"X": largest + largest[:1]})
    assert status == 400 and "1 to 4096 examples" in json.loads(body)["error"]


W1, W2, B1, B2 = [[1, 2, 3]] * 4, [[1, 2, 3, 4]], [0, 0, 0, 0], [0]  # mlp_3_4_1's shapes: W1 4 x 3, W2 1 x 4


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"x": [1, 2, 3], "W": [W1, W2]}, "'W' and 'b' go together"),
        ({"x": [1, 2, 3], "W": [W1], "b": [B1]}, "'W' must be a list of 2 items, one per layer"),
        ({"x": [1, 2, 3], "W": [W1, [[1, 2, 3]]], "b": [B1, B2]}, "layer 2: 'W' item 2 must be 1 row of 4 numbers"),
        ({"x": [1, 2, 3], "W": [W1[:3], W2], "b": [B1, B2]}, "layer 1: 'W' item 1 must be 4 rows of 3 numbers"),
        ({"x": [1, 2, 3], "W": [W1, W2], "b": [B1[:3], B2]}, "'b' item 1 must be a list of 4 numbers (b[1] has 4"),
        ({"x": [1, 2, 3], "W": [W1, W2], "b": [B1, [[0]]]}, "layer 2: 'b' item 2 must hold finite numbers only"),
        ({"x": [1, 2, 3], "W": [W1, [[1, 2, "3", 4]]], "b": [B1, B2]}, "layer 2: 'W' item 2 must hold finite numbers"),
        ({"x": [1, 2, 3], "W": [W1, [[1, 2, True, 4]]], "b": [B1, B2]}, "finite numbers only"),
        ({"x": [1, 2, 3], "W": [W1, [[1, 2, 1e39, 4]]], "b": [B1, B2]}, "beyond float32's range"),
        ({"x": [1, 2, 3], "X": [[1, 2, 3]]}, "'x' (one example) or 'X' (a batch of examples), not both"),
        ({"X": []}, "'X' must be a list of 1 to 4096 examples, each 3 numbers"),
        ({"X": [[1, 2, 3], [1, 2]]}, "'X' must be 2 rows of 3 numbers"),
    ],
)  # fmt: skip
def test_oracle_route_refuses_weights_or_a_batch_of_the_wrong_shape_by_name(served, document, message):
    status, _, body = post(served, "/v2/models/mlp_3_4_1/network/oracle", document)
    assert status == 400 and message in json.loads(body)["error"], body
    if "W" in document and "b" in document:  # the download checks them alike
        status, _, body = post(served, "/v2/models/mlp_3_4_1/network/weights.npz", document)
        assert status == 400 and message in json.loads(body)["error"], body


def test_weights_npz_needs_the_weights(served):
    for document in ({}, {"W": [W1, W2]}):
        status, _, body = post(served, "/v2/models/mlp_3_4_1/network/weights.npz", document)
        assert status == 400 and "'W' and 'b'" in json.loads(body)["error"], body


def test_downloaded_weights_build_a_model_that_answers_as_the_oracle_for_them(served, models, tmp_path):
    back = read_back(models, "softmax_4_8_8_3")
    edited = other_weights(back.spec, seed=9)
    status, headers, data = post(served, "/v2/models/softmax_4_8_8_3/versions/1/network/weights.npz", edited)
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    named = "softmax_4_8_8_3-edited-weights.npz"
    assert headers["Content-Disposition"] == f"attachment; filename=\"{named}\"; filename*=UTF-8''{named}"
    weights = tmp_path / "edited.npz"
    weights.write_bytes(data)
    with np.load(weights, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["W1", "W2", "W3", "b1", "b2", "b3"]
        spec = with_weights(back.spec, edited)
        for l in range(1, 4):  # the values sent, in the slides' shapes
            np.testing.assert_array_equal(archive[f"W{l}"], spec.weights[l - 1])
            np.testing.assert_array_equal(archive[f"b{l}"], spec.biases[l - 1])
    built = tmp_path / "edited.onnx"
    activations = ",".join(str(a) for a in back.spec.activations)
    result = run_cli("build", "--weights", weights, "--activations", activations, "--output", built)
    assert result.returncode == 0, result.stderr
    X = np.random.default_rng(5).standard_normal((4, 6)).astype(np.float32).astype(np.float64)
    status, _, body = post(served, "/v2/models/softmax_4_8_8_3/network/oracle", {"X": X.T.tolist(), **edited})
    assert status == 200, body
    answer = json.loads(body)
    assert_oracle_answer(answer, spec, X, "float32")
    session = onnxruntime.InferenceSession(built.read_bytes(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": X.T.astype(np.float32)})[0].T
    error = np.abs(y.astype(np.float64) - np.array(answer["layers"][-1]["A"]))
    assert np.all(error <= np.array(answer["layers"][-1]["A_bound"])), error


def test_a_download_is_named_after_any_model_name_safely(served, models):
    spec = read_back(models, HOSTILE).spec
    path = f"/v2/models/{quote(HOSTILE, safe='')}/network/weights.npz"
    status, headers, _ = post(served, path, other_weights(spec, seed=1))
    assert status == 200
    plain, encoded = headers["Content-Disposition"].split("; ")[1:]
    assert plain == 'filename="_img_src_x_onerror_alert_1__-edited-weights.npz"'
    assert encoded == "filename*=UTF-8''" + quote(f"{HOSTILE}-edited-weights.npz", safe="")


def test_the_weight_routes_are_bounded_need_the_token_and_go_with_the_page(models, pki):
    big = b'{"X": [' + b"[1, 2, 3], " * 100_000 + b"[1, 2, 3]]}"  # 1.1 MB: above the page routes' 1 MiB
    edited = other_weights(read_back(models, "mlp_3_4_1").spec, seed=2)
    with serving(models, "--auth-token-file", str(pki / "token")) as process:
        for method, route in ROUTES:
            body = json.dumps({"x": [1, 2, 3], **edited}).encode() if method == "POST" else None
            path = f"/v2/models/mlp_3_4_1/{route}"
            status, headers, _ = fetch(process, path, body)
            assert status == 401 and headers["WWW-Authenticate"] == "Bearer", route
            assert fetch(process, path, body, TOKEN)[0] == 200, route
            if method == "POST":  # on a connection kept open, which reads the rest of the body after the 413
                answer = call(process, "POST", path, big, {"Authorization": f"Bearer {TOKEN}"})
                assert answer[0] == 413 and "1048576-byte limit" in json.loads(answer[2])["error"], route
    with serving(models, "--no-page") as process:
        for method, route in ROUTES:
            body = json.dumps({"x": [1, 2, 3], **edited}).encode() if method == "POST" else None
            assert fetch(process, f"/v2/models/mlp_3_4_1/{route}", body)[0] == 404, route


EDITABLE_IN_THE_BROWSER = """async ([name, inputName, xShape, x, weights, float64]) => {
  const ort = await import('/static/ort/ort.wasm.min.mjs');
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = location.origin + '/static/ort/';
  const bytes = await (await fetch(`/v2/models/${name}/network/editable.onnx`)).arrayBuffer();
  const session = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ['wasm'] });
  const Values = float64 ? Float64Array : Float32Array;
  const tensor = (values, shape) => new ort.Tensor(float64 ? 'float64' : 'float32', Values.from(values), shape);
  const feeds = { [inputName]: tensor(x, xShape) };
  weights.W.forEach((W, i) => { feeds[`W${i + 1}`] = tensor(W.flat(), [W.length, W[0].length]); });
  weights.b.forEach((b, i) => { feeds[`b${i + 1}`] = tensor(b, [b.length, 1]); });
  const outputs = Object.entries(await session.run(feeds));
  return Object.fromEntries(outputs.map(([key, t]) => [key, { data: Array.from(t.data), dims: t.dims }]));
}"""


def test_onnxruntime_web_runs_the_editable_model_within_the_oracles_bound(browser, served, models):  # noqa: F811
    """The page's runtime takes editable.onnx and the weights it is fed: the served ones, and others."""
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(served.http_url + "/")
        for name in NAMES:
            back = read_back(models, name)
            X = np.random.default_rng(6).standard_normal((back.spec.sizes[0], 3)).astype(back.dtype)
            fed = X.T if back.layout == "rows" else X
            network = json.loads(fetch(served, f"/v2/models/{name}/network")[2])["weights"]
            served_weights = {key: [item[key] for item in network] for key in ("W", "b")}
            for weights in (served_weights, other_weights(back.spec, seed=7)):
                arguments = [
                    name,
                    back.input_name,
                    list(fed.shape),
                    fed.reshape(-1).tolist(),
                    weights,
                    back.dtype == "float64",
                ]
                outputs = page.evaluate(EDITABLE_IN_THE_BROWSER, arguments)
                document = {"X": X.T.astype(np.float64).tolist(), **weights}
                answer = json.loads(post(served, f"/v2/models/{name}/network/oracle", document)[2])
                shaped = {k: np.reshape(v["data"], v["dims"]) for k, v in outputs.items()}
                assert_within_answer({k: v.T if back.layout == "rows" else v for k, v in shaped.items()}, answer, back)
    finally:
        context.close()
