"""The container image under test (`make test-image` builds it first): the image started as
`docker run` starts it, models/ mounted at /mnt/models as KServe mounts a repository, on the host's
network but listening on loopback only, and the committed models each test is parametrized over.

tritonclient and kserve both define the protobuf package `inference`, and one process can hold only
one of them: test_image_kserve.py runs in a pytest process of its own (FORWARDPASS_KSERVE_TESTS=1),
the other files in another; `make test-image` runs both."""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from forwardpass.builder.readback import read_file
from forwardpass.builder.spec import NetworkSpec

from harness import ROOT, free_port

IMAGE = os.environ.get("FORWARDPASS_IMAGE", "forwardpass:latest")
MODELS = ("mlp_3_4_1", "mlp_3_4_1_sigmoid")  # the committed repository, models/: FP32, rows [-1, n0]
KSERVE_ONLY = os.environ.get("FORWARDPASS_KSERVE_TESTS") == "1"
collect_ignore = [
    path.name for path in Path(__file__).parent.glob("test_*.py") if ("kserve" in path.name) != KSERVE_ONLY
]


def docker_command(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """One docker CLI call, its output captured as text."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=check)


@dataclass(frozen=True)
class Container:
    """A running container of the image and its loopback ports."""

    name: str
    http: int
    grpc: int
    metrics: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc}"


def pytest_generate_tests(metafunc):
    """Every test that takes `model` runs for each committed model."""
    if "model" in metafunc.fixturenames:
        metafunc.parametrize("model", MODELS)


@pytest.fixture(scope="session")
def models() -> list[str]:
    """The committed models' names, sorted."""
    return sorted(MODELS)


@pytest.fixture(scope="session")
def image() -> str:
    """The image under test: FORWARDPASS_IMAGE, as make test-image names it."""
    return IMAGE


@pytest.fixture(scope="session")
def docker():
    return docker_command


@pytest.fixture(scope="module")
def container():
    """The image with one CPU and its ENTRYPOINT's defaults, its args appended after the
    ENTRYPOINT's: loopback only, free ports, and --page (the ENTRYPOINT's --no-page undone) for the
    page's tests."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    name = f"forwardpass-test-{os.getpid()}-{time.monotonic_ns()}"
    docker_command("run", "--detach", "--name", name, "--network", "host", "--cpus", "1",
                   "--volume", f"{ROOT / 'models'}:/mnt/models:ro", IMAGE,
                   "--host", "127.0.0.1", "--metrics-host", "127.0.0.1",
                   "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                   "--page")  # fmt: skip
    served = Container(name, http, grpc, metrics)
    try:
        wait_ready(served)
        yield served
    finally:
        docker_command("rm", "--force", name, check=False)


def wait_ready(container: Container, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{container.http_url}/v2/health/ready", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("container not ready:\n" + docker_command("logs", container.name, check=False).stderr)


@dataclass(frozen=True)
class Committed:
    """What the server must say about a committed model: its file's network (the oracle's too) and
    its config.pbtxt. Both are FP32 and take rows: x is [-1, n0], y is [-1, nL]."""

    name: str
    spec: NetworkSpec
    max_batch_size: int

    def tensors(self) -> tuple[dict, dict]:
        """The V2 metadata of input x and output y."""
        sizes = self.spec.sizes
        return (
            {"name": "x", "datatype": "FP32", "shape": [-1, sizes[0]]},
            {"name": "y", "datatype": "FP32", "shape": [-1, sizes[-1]]},
        )


@pytest.fixture(scope="session")
def committed():
    """The committed model of a name, as models/ holds it."""

    def read(model: str) -> Committed:
        folder = ROOT / "models" / model
        config = (folder / "config.pbtxt").read_text()
        max_batch_size = int(re.search(r"^max_batch_size: (\d+)$", config, re.MULTILINE)[1])
        return Committed(model, read_file(folder / "1" / "model.onnx").spec, max_batch_size)

    return read


@pytest.fixture
def rng(request):
    """A generator seeded by the test's own id, so each case gets its own inputs, the same every run."""
    return np.random.default_rng(list(request.node.nodeid.encode()))
