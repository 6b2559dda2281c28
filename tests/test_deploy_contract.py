"""The container's contract, run here as KServe and Kubernetes would run it, without Docker: the image's
ENTRYPOINT (read from the Dockerfile) plus each manifest's `args`, the model repository at the path they
name, the ports they declare answering V2 over HTTP and gRPC, and the probes they declare answering.

The manifests' ports (8080, 9000, ...) may be taken on a shared machine, so each port the arguments
open is moved to a free loopback one by flags appended last (the last of a repeated flag wins, as when
the manifests append theirs to the ENTRYPOINT), and every declared port and probe is followed through
the same map: a probe aimed at a port the server does not open fails."""

from __future__ import annotations

import json
import re
import shutil
import socket
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from forwardpass.builder.readback import read_file
from forwardpass.cli import make_parser
from forwardpass.client import Client
from forwardpass.server.options import from_arguments

from harness import ROOT, ServerProcess, free_port
from numerics import assert_matches_oracle, random_input

KSERVE_MOUNT = Path("/mnt/models")  # where KServe's storage initializer puts the storageUri's files
MODEL = "mlp_3_4_1"


def entrypoint() -> list[str]:
    """The Dockerfile's ENTRYPOINT, exec form, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (line,) = re.findall(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE)
    return json.loads(line)


def manifest(path: str, kind: str) -> dict:
    return next(d for d in yaml.safe_load_all((ROOT / "deploy" / path).read_text()) if d["kind"] == kind)


def runtime_container() -> dict:
    (container,) = manifest("kserve/servingruntime.yaml", "ServingRuntime")["spec"]["containers"]
    return container


def grpc_isvc_model() -> dict:
    """The gRPC InferenceService's overrides of the runtime's container (its port, its probes)."""
    return manifest("kserve/inferenceservice-grpc.yaml", "InferenceService")["spec"]["predictor"]["model"]


def deployment_container() -> dict:
    (container,) = manifest("kubernetes/deployment.yaml", "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


CONTAINERS = {
    "kserve-http": runtime_container,
    "kserve-grpc": lambda: {**runtime_container(), **{k: v for k, v in grpc_isvc_model().items() if k != "args"}},
    "kubernetes": deployment_container,
}


def test_the_entrypoint_serves_kserves_mount_on_every_interface():
    command = entrypoint()
    assert command[:2] == ["forwardpass", "serve"]
    options = from_arguments(make_parser().parse_args(command[1:]))
    assert options.model_repository == KSERVE_MOUNT and options.host == "0.0.0.0"
    assert (options.http_port, options.grpc_port, options.metrics_port) == (8000, 8001, 8002)
    assert options.grace < 10, "within docker stop's default 10 s, or Docker kills the drain"
    assert not options.page, "the page hands out every model's weights: off in the image"
    assert from_arguments(make_parser().parse_args([*command[1:], "--page"])).page, "the last of --page/--no-page wins"


@pytest.mark.parametrize("name", CONTAINERS)
def test_the_container_answers_v2_and_its_probes_as_the_manifest_runs_it(tmp_path, name):
    container = CONTAINERS[name]()
    args = entrypoint()[1:] + container.get("args", [])
    options = from_arguments(make_parser().parse_args(args))
    assert options.model_repository == KSERVE_MOUNT
    assert not options.page, "the page hands out every model's weights: off in a cluster"
    ports = {options.http_port: free_port(), options.grpc_port: free_port(), options.metrics_port: free_port()}
    repository = tmp_path / "mnt" / "models"  # KServe's mount, here: a copy of models/
    shutil.copytree(ROOT / "models", repository)
    server = ServerProcess(
        repository,
        *args[1:],
        "--host", "127.0.0.1", "--metrics-host", "127.0.0.1", "--model-repository", str(repository),
        "--http-port", str(ports[options.http_port]), "--grpc-port", str(ports[options.grpc_port]),
        "--metrics-port", str(ports[options.metrics_port]), "--workers", "1",
    )  # fmt: skip
    try:
        named = {port["name"]: port["containerPort"] for port in container["ports"]}
        for port in named.values():
            assert port in ports, f"declared port {port} is not one the server opens ({sorted(ports)})"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container:
                assert_probe_answers(container[probe], lambda port: ports[named.get(port, port)])
        assert_answers_v2(repository, ports[options.http_port], ports[options.grpc_port])
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports[options.metrics_port]}/metrics", timeout=10)
        assert f'nv_inference_request_success{{model="{MODEL}",version="1"}} 2' in metrics.read().decode()
    finally:
        assert server.stop() == 0, server.output()


def assert_probe_answers(probe: dict, local_port) -> None:
    """Run one probe as the kubelet does: HTTP GET answering 2xx, gRPC health SERVING, or a TCP connect."""
    if "httpGet" in probe:
        url = f"http://127.0.0.1:{local_port(probe['httpGet']['port'])}{probe['httpGet']['path']}"
        assert urllib.request.urlopen(url, timeout=10).status == 200
    elif "grpc" in probe:
        with grpc.insecure_channel(f"127.0.0.1:{local_port(probe['grpc']['port'])}") as channel:
            request = health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", ""))
            answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    else:
        socket.create_connection(("127.0.0.1", local_port(probe["tcpSocket"]["port"])), timeout=10).close()


def assert_answers_v2(repository: Path, http_port: int, grpc_port: int) -> None:
    """The oracle's answers for the 3-4-1 model over V2 HTTP/REST and V2 gRPC."""
    spec = read_file(repository / MODEL / "1" / "model.onnx").spec
    X = random_input(np.random.default_rng(0), 3, 16, "float32")
    for url in (f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"):
        with Client(url, timeout=30) as client:
            assert client.ready()
            assert_matches_oracle(spec, X, client.infer(MODEL, X.T).T, "float32")
