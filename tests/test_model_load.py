"""Loading large models: a worker's memory peaks within a few times the file."""

from pathlib import Path

import grpc
import numpy as np
import pytest

from forwardpass.builder.spec import Activation, NetworkSpec
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from harness import ServerProcess, answering_worker, build_into

MIB = 2**20
# What a load may add to a worker's peak memory: a few copies of the weights (the read-back spec in
# float64, onnxruntime's session, the derived columns-inside session) and onnxruntime's own start.
PEAK_FILES, PEAK_MIB = 4, 100


def one_hidden_layer(width: int) -> NetworkSpec:
    """3-width-1, relu then sigmoid: most of its weights in one wide layer and one narrow one."""
    rng = np.random.default_rng(0)
    sizes = (3, width, 1)
    weights = tuple(rng.standard_normal((n, m)) / np.sqrt(m) for m, n in zip(sizes[:-1], sizes[1:]))
    biases = tuple(rng.standard_normal((n, 1)) for n in sizes[1:])
    return NetworkSpec(sizes, (Activation("relu"), Activation("sigmoid")), weights, biases)


def stub(server):
    channel = grpc.insecure_channel(server.url)
    return channel, pb_grpc.GRPCInferenceServiceStub(channel)


def memory(pid: str, key: str) -> int:
    """A line of /proc/PID/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def reset_peak(pid: str) -> None:
    """Start VmHWM again from the RSS of now (Linux: 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError as exc:
        pytest.skip(f"cannot reset the worker's peak RSS through /proc/{pid}/clear_refs: {exc.strerror}")


@pytest.mark.parametrize("width", [200_000, 1_000_000])
def test_a_wide_model_loads_within_four_times_its_file(tmp_path, width):
    # 3-200,000-1 (4 MB) gets the derived columns-inside session and its check against the oracle;
    # 3-1,000,000-1 (20 MB) is over the size for one. Before, they peaked at 0.75 and 3.7 GB.
    build_into(tmp_path, "wide", one_hidden_layer(width))
    size = (tmp_path / "wide" / "1" / "model.onnx").stat().st_size
    server = ServerProcess(tmp_path, "--workers", "1", "--no-http", "--model-control-mode", "explicit")
    channel, s = stub(server)
    try:
        pid = answering_worker(s)
        before = memory(pid, "VmRSS")
        reset_peak(pid)
        s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="wide"), timeout=60)
        grown = memory(pid, "VmHWM") - before
        assert s.ModelReady(pb.ModelReadyRequest(name="wide"), timeout=10).ready
    finally:
        channel.close()
        server.stop()
    assert grown <= PEAK_FILES * size + PEAK_MIB * MIB, (
        f"loading a {size / MIB:.1f} MiB model raised the worker's peak RSS by {grown / MIB:.0f} MiB"
    )
