"""The container image as a container: run by a real Docker engine (`make test-image`, which builds
it first; the container is conftest.py's), metrics on their port, a non-root server, workers from the
CPU limit, onnxruntime's telemetry off, no wheelhouse or pip left behind, the page at / with its model
list and network routes (the ENTRYPOINT turns the page off; the container of these tests turns it back
on with --page), and exit 0 on `docker stop`. The V2 API's
routes are checked through Triton's and KServe's clients in test_image_tritonclient.py and
test_image_kserve.py."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest

from forwardpass.builder.oracle import forward

from harness import ROOT
from numerics import assert_matches_oracle, random_input

DOCKER_STOP_TIMEOUT = 10  # docker stop's default: SIGTERM, then SIGKILL after this many seconds
# The page's oracle route and this test's run the same float64 equations, maybe on another NumPy
# build (the image's wheel): sums may differ in their last bits, never more.
SAME_FLOAT64 = 1e-12


def fetch(url: str, body: dict | None = None):
    """A GET, or a POST of JSON as the page's script sends it; the response, read by the caller."""
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"content-type": "application/json"}
    return urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30)


def infer_body(X: np.ndarray) -> dict:
    """A V2 JSON inference request for the columns X, fed as rows."""
    return {
        "inputs": [{"name": "x", "shape": [X.shape[1], X.shape[0]], "datatype": "FP32", "data": X.T.ravel().tolist()}]
    }


def test_metrics_answer_on_their_port(container, rng):
    X = random_input(rng, 3, 2, "float32")
    fetch(f"{container.http_url}/v2/models/mlp_3_4_1/infer", infer_body(X)).read()
    text = fetch(f"http://127.0.0.1:{container.metrics}/metrics").read().decode()
    counter = 'nv_inference_request_success{model="mlp_3_4_1",version="1"} '
    assert [float(line[len(counter) :]) >= 1 for line in text.splitlines() if line.startswith(counter)] == [True]


def test_the_server_runs_as_uid_1000(container, docker, image):
    status = docker("exec", container.name, "cat", "/proc/1/status").stdout
    assert [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")] == [["1000"] * 4]
    assert docker("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip() == "1000:1000"


def test_one_cpu_gets_one_worker(container, docker):
    """--cpus 1 is the cgroup's CPU quota; the node's cores are not the default any more."""
    assert " 1 worker (pids " in docker("logs", container.name).stderr


def test_the_entrypoint_turns_the_page_off(docker, image):
    """The page hands out every model's weights: the image serves it only when asked (--page, which
    the container of these tests passes)."""
    entrypoint = json.loads(docker("image", "inspect", "--format", "{{json .Config.Entrypoint}}", image).stdout)
    assert entrypoint[:2] == ["forwardpass", "serve"] and entrypoint[-1] == "--no-page"


def test_the_page_is_served_at_the_root(container):
    page = fetch(f"{container.http_url}/")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.read().decode()
    assert "<title>forwardpass: the network, computed</title>" in html
    assert '<script type="module" src="/static/page.js"></script>' in html and 'id="model"' in html
    script = fetch(f"{container.http_url}/static/page.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "'/v2/repository/index'" in script.read().decode()  # the model list route tested below


def test_the_pages_model_list_names_every_model_ready(container, models):
    """page.js fills its model menu from POST /v2/repository/index with the body {}."""
    answer = fetch(f"{container.http_url}/v2/repository/index", {})
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    assert json.loads(answer.read()) == [
        {"name": model, "version": "1", "state": "READY", "reason": ""} for model in models
    ]


def test_the_pages_network_routes_match_the_oracle(container, model, committed, rng):
    """What the page draws and computes for the version it picks from the list: the network, its
    float64 oracle for one x, and the ONNX file with every Z[l] and A[l] for onnxruntime-web."""
    spec = committed(model).spec
    base = f"{container.http_url}/v2/models/{model}/versions/1/network"
    network = json.loads(fetch(base).read())
    assert (network["name"], network["version"], network["layout"], network["dtype"]) == (model, "1", "rows", "float32")
    assert network["sizes"] == list(spec.sizes)
    assert network["activations"] == [activation.name for activation in spec.activations]

    X = random_input(rng, spec.sizes[0], 1, "float32")
    answer = json.loads(fetch(f"{base}/oracle", {"x": X[:, 0].tolist()}).read())
    expected = forward(spec, X.astype(np.float64))
    assert len(answer["layers"]) == spec.depth
    for l, layer in enumerate(answer["layers"], start=1):
        np.testing.assert_allclose(layer["Z"], expected.Z[l][:, 0], rtol=SAME_FLOAT64, atol=0)
        np.testing.assert_allclose(layer["A"], expected.A[l][:, 0], rtol=SAME_FLOAT64, atol=0)

    hidden = fetch(f"{base}/model.onnx")
    assert hidden.headers["content-type"] == "application/octet-stream"
    session = ort.InferenceSession(hidden.read(), providers=["CPUExecutionProvider"])
    X = random_input(rng, spec.sizes[0], 16, "float32")
    names = [output.name for output in session.get_outputs()]
    results = dict(zip(names, session.run(None, {"x": np.ascontiguousarray(X.T)})))
    for l in range(1, spec.depth + 1):
        for kind in "ZA" if l < spec.depth else "Z":
            assert_matches_oracle(spec, X, results[f"{kind}{l}"].T, "float32", layer=f"{kind}{l}")
    assert_matches_oracle(spec, X, results["y"].T, "float32")


def test_the_pages_wasm_is_in_the_image(container, docker):
    """make image puts onnxruntime-web (make web) in the image: the page computes in the browser."""
    if not (ROOT / "web" / "ort" / ".installed").exists():
        pytest.skip("no onnxruntime-web here to put in the image (make web needs npm)")
    wasm = fetch(f"{container.http_url}/static/ort/ort-wasm-simd-threaded.wasm")
    assert wasm.headers["content-type"] == "application/wasm" and wasm.read(4) == b"\0asm"
    assert "not installed for the page" not in docker("logs", container.name).stderr


def test_the_openapi_document_and_swagger_ui_are_in_the_image(container):
    """/openapi.json is served whatever --page says; make image puts Swagger UI (make web) in for /docs."""
    document = json.load(fetch(f"{container.http_url}/openapi.json"))
    assert document["openapi"] == "3.1.0" and "/v2/models/{model_name}/infer" in document["paths"]
    if not (ROOT / "web" / "docs" / "swagger-ui" / ".installed").exists():
        pytest.skip("no Swagger UI here to put in the image (make web needs npm)")
    bundle = fetch(f"{container.http_url}/static/docs/swagger-ui-bundle.js")
    assert bundle.headers["content-type"] == "text/javascript; charset=utf-8" and b"SwaggerUIBundle" in bundle.read()


def test_onnxruntime_telemetry_is_off(container, docker):
    assert "telemetry" not in docker("logs", container.name).stderr


def test_no_wheelhouse_or_pip_is_left_in_the_image(docker, image):
    code = "import os, importlib.util; print(os.path.exists('/wheelhouse'), importlib.util.find_spec('pip'))"
    found = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", code)
    assert found.stdout.split() == ["False", "None"]


def test_docker_stop_drains_and_exits_0(container, docker):
    """Last: SIGTERM, the calls in flight finish within --grace, and the exit comes before SIGKILL."""
    started = time.monotonic()
    docker("stop", container.name)
    assert time.monotonic() - started < DOCKER_STOP_TIMEOUT
    assert docker("inspect", "--format", "{{.State.ExitCode}}", container.name).stdout.strip() == "0"
    assert "all workers stopped" in docker("logs", container.name).stderr
