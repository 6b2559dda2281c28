"""The container image, run by a real Docker engine (`make test-image`, which builds it first): on the
host's network but listening on loopback only, models/ mounted at /mnt/models as KServe mounts a
repository, Triton's own clients getting the oracle's answers over gRPC and HTTP, a non-root server,
workers from the CPU limit, no wheelhouse left behind, and exit 0 on `docker stop`. tritonclient
brings its own protobuf package `inference`: this runs in a pytest process of its own."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from forwardpass.builder.readback import read_file

from harness import ROOT, free_port
from numerics import assert_matches_oracle, random_input

IMAGE = os.environ.get("FORWARDPASS_IMAGE", "forwardpass:latest")
MODELS = ("mlp_3_4_1", "mlp_3_4_1_sigmoid")
DOCKER_STOP_TIMEOUT = 10  # docker stop's default: SIGTERM, then SIGKILL after this many seconds


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=check)


@pytest.fixture(scope="module")
def container():
    """The image as `docker run` starts it, with one CPU; its args appended after the ENTRYPOINT's."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    name = f"forwardpass-test-{os.getpid()}"
    docker("run", "--detach", "--name", name, "--network", "host", "--cpus", "1",
           "--volume", f"{ROOT / 'models'}:/mnt/models:ro", IMAGE,
           "--host", "127.0.0.1", "--metrics-host", "127.0.0.1",
           "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics))  # fmt: skip
    try:
        wait_ready(name, http)
        yield {"name": name, "http": http, "grpc": grpc, "metrics": metrics}
    finally:
        docker("rm", "--force", name, check=False)


def wait_ready(name: str, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("container not ready:\n" + docker("logs", name, check=False).stderr)


def oracle_case(name: str):
    spec = read_file(ROOT / "models" / name / "1" / "model.onnx").spec
    return spec, random_input(np.random.default_rng(1), 3, 64, "float32")


@pytest.mark.parametrize("model", MODELS)
def test_tritonclient_over_grpc_gets_the_oracles_answers(container, model):
    spec, X = oracle_case(model)
    with grpcclient.InferenceServerClient(f"127.0.0.1:{container['grpc']}") as client:
        assert client.is_server_ready() and client.is_model_ready(model)
        tensor = grpcclient.InferInput("x", [X.shape[1], 3], "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(X.T))
        assert_matches_oracle(spec, X, client.infer(model, [tensor]).as_numpy("y").T, "float32")


@pytest.mark.parametrize("model", MODELS)
def test_tritonclient_over_http_gets_the_oracles_answers(container, model):
    spec, X = oracle_case(model)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{container['http']}")
    try:
        assert client.is_server_ready() and client.is_model_ready(model)
        tensor = httpclient.InferInput("x", [X.shape[1], 3], "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(X.T), binary_data=True)
        assert_matches_oracle(spec, X, client.infer(model, [tensor]).as_numpy("y").T, "float32")
    finally:
        client.close()


def test_metrics_answer_on_their_port(container):
    text = urllib.request.urlopen(f"http://127.0.0.1:{container['metrics']}/metrics", timeout=10).read().decode()
    assert 'nv_inference_request_success{model="mlp_3_4_1",version="1"}' in text


def test_the_server_runs_as_uid_1000(container):
    status = docker("exec", container["name"], "cat", "/proc/1/status").stdout
    assert [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")] == [["1000"] * 4]
    assert docker("image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip() == "1000:1000"


def test_one_cpu_gets_one_worker(container):
    """--cpus 1 is the cgroup's CPU quota; the node's cores are not the default any more."""
    assert " 1 worker (pids " in docker("logs", container["name"]).stderr


def test_the_page_and_its_wasm_are_served(container):
    """make image puts onnxruntime-web (make web) in the image: the page computes in the browser."""
    base = f"http://127.0.0.1:{container['http']}"
    assert b"forwardpass" in urllib.request.urlopen(f"{base}/", timeout=10).read()
    if not (ROOT / "web" / "ort" / ".installed").exists():
        pytest.skip("no onnxruntime-web here to put in the image (make web needs npm)")
    wasm = urllib.request.urlopen(f"{base}/static/ort/ort-wasm-simd-threaded.wasm", timeout=30)
    assert wasm.headers["content-type"] == "application/wasm" and wasm.read(4) == b"\0asm"
    assert "not installed for the page" not in docker("logs", container["name"]).stderr


def test_onnxruntime_telemetry_is_off(container):
    assert "telemetry" not in docker("logs", container["name"]).stderr


def test_no_wheelhouse_or_pip_is_left_in_the_image():
    code = "import os, importlib.util; print(os.path.exists('/wheelhouse'), importlib.util.find_spec('pip'))"
    found = docker("run", "--rm", "--network", "none", "--entrypoint", "python", IMAGE, "-c", code)
    assert found.stdout.split() == ["False", "None"]


def test_docker_stop_drains_and_exits_0(container):
    """Last: SIGTERM, the calls in flight finish within --grace, and the exit comes before SIGKILL."""
    started = time.monotonic()
    docker("stop", container["name"])
    assert time.monotonic() - started < DOCKER_STOP_TIMEOUT
    assert docker("inspect", "--format", "{{.State.ExitCode}}", container["name"]).stdout.strip() == "0"
    assert "all workers stopped" in docker("logs", container["name"]).stderr
