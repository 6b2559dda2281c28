"""Worker processes: connections spread over them, a dead one is replaced, SIGTERM drains them all."""

import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from harness import ROOT, ServerProcess, answering_worker, free_port


def worker_pid(url: str) -> int:
    """Which worker answers a new connection (its own subchannel pool: a connection of its own)."""
    with grpc.insecure_channel(url, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        return int(answering_worker(pb_grpc.GRPCInferenceServiceStub(channel)))


def children(pid: int) -> set[int]:
    text = open(f"/proc/{pid}/task/{pid}/children").read()
    return {int(p) for p in text.split()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def three_workers(tmp_path):
    shutil.copytree(ROOT / "models", tmp_path / "models")
    server = ServerProcess(tmp_path / "models", "--workers", "3")
    yield server
    server.stop()


def test_connections_spread_over_the_workers(three_workers):
    pids = {worker_pid(three_workers.url) for _ in range(24)}
    assert len(pids) > 1 and pids <= children(three_workers.process.pid)


def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(three_workers):
    before = children(three_workers.process.pid)
    assert len(before) == 3
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    # Connections the kernel had already queued on the dead worker's socket are reset with it (a
    # client retries those); once the supervisor has reaped it, every new connection is answered.
    deadline = time.monotonic() + 10
    while Path(f"/proc/{victim}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    x = np.ones((2, 3), np.float32)
    request = pb.ModelInferRequest(model_name="mlp_3_4_1")
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    for _ in range(20):  # new connections keep getting answers while the worker is replaced
        with grpc.insecure_channel(three_workers.url, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            assert (
                len(pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10).raw_output_contents) == 1
            )
    deadline = time.monotonic() + 30
    while (
        len(children(three_workers.process.pid)) < 3 or victim in children(three_workers.process.pid)
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
    after = children(three_workers.process.pid)
    assert len(after) == 3 and victim not in after
    assert f"(pid {victim}) died: killed by SIGKILL; restarting it" in three_workers.output()


def test_sigterm_drains_every_worker(three_workers):
    workers = children(three_workers.process.pid)
    assert three_workers.stop() == 0
    assert not any(alive(pid) for pid in workers)
    assert "all workers stopped" in three_workers.output()


def test_a_killed_supervisor_takes_its_workers_along(three_workers):
    workers = children(three_workers.process.pid)
    three_workers.process.kill()
    three_workers.process.wait(10)
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)


@pytest.mark.parametrize("join_ready", [False, True])
def test_a_joining_worker_binds_only_once_its_models_have_loaded(join_ready):
    # A replacement worker shares the port with a serving one (SO_REUSEPORT): bound while it loads,
    # it would take connections and refuse their calls as not ready. The first worker binds first
    # so that a liveness probe is answered while it loads.
    from server.app import Server
    from server.options import ServeOptions

    port = free_port()
    server = Server(ServeOptions(model_repository=ROOT / "models", grpc_port=port, http=False, grace=0))
    loading, release = threading.Event(), threading.Event()
    load = server.repository.load

    def slow_load(wanted):
        loading.set()
        release.wait(10)
        return load(wanted)

    server.repository.load = slow_load
    starter = threading.Thread(target=server.start, args=(join_ready,))
    starter.start()
    try:
        assert loading.wait(10)
        time.sleep(0.2)  # were it going to bind before loading, it would have by now
        with socket.socket() as probe:
            listening = probe.connect_ex(("127.0.0.1", port)) == 0
        assert listening is not join_ready
    finally:
        release.set()
        starter.join(30)
        server.stop(0)
