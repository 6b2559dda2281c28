"""Fixtures shared by the test modules: a served repository and a server on a loopback port."""

import os
import shutil

import pytest

from harness import ROOT, ServerProcess, free_port, make_pki, served_repository, served_repository_apart

# tritonclient, kserve and our stubs all define the protobuf package `inference`, and one process can
# hold only one of them: the tritonclient tests and the kserve tests each run in a pytest process of
# their own (`make test` does).
TRITON_ONLY = os.environ.get("FORWARDPASS_TRITON_TESTS") == "1"
KSERVE_ONLY = os.environ.get("FORWARDPASS_KSERVE_TESTS") == "1"
collect_ignore = ([] if TRITON_ONLY else ["triton"]) + ([] if KSERVE_ONLY else ["kserve"])
# The deploy/ manifests' validation imports kserve too; the container image test needs a Docker
# engine and minutes (`make test-image`).
collect_ignore += [] if os.environ.get("FORWARDPASS_DEPLOY_TESTS") == "1" else ["deploy"]
collect_ignore += [] if os.environ.get("FORWARDPASS_IMAGE_TESTS") == "1" else ["image"]


def pytest_report_header(config):
    if not TRITON_ONLY:
        return "tests/triton runs in its own process: FORWARDPASS_TRITON_TESTS=1 pytest tests/triton"
    return None


@pytest.fixture(scope="session")
def repository(tmp_path_factory):
    build = served_repository_apart if TRITON_ONLY or KSERVE_ONLY else served_repository
    return build(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="session")
def server(repository):
    process = ServerProcess(repository, "--skip-bad-models", "--max-message-mb", "16")
    yield process
    assert process.stop() == 0, process.output()


@pytest.fixture
def two_workers(tmp_path):
    """A server of the committed models with 2 workers and a metrics port, and that port."""
    shutil.copytree(ROOT / "models", tmp_path / "models")
    port = free_port()
    process = ServerProcess(tmp_path / "models", "--workers", "2", "--metrics-port", str(port))
    yield process, port
    assert process.stop() == 0, process.output()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """Certificates and a token for the TLS and token tests (harness.make_pki)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
