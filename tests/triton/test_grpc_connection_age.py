"""--grpc-max-connection-age and its grace, against Triton's own client: one long-lived tritonclient
channel, calls from three threads for a few seconds, some slow enough to be in flight when the server
sends GOAWAY. The channel must reconnect, and no call may fail.

What shows the reconnection is the kernel's own table of TCP connections (/proc/net/tcp): the client
side of every connection to the server's port, sampled while the calls run. One channel keeps one
connection (checked with the flags off); with a 1 s age it opens a new one about every second.
Runs in the tritonclient pytest process (tests/conftest.py).
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from harness import ROOT, ServerProcess, run_cli

SECONDS = 4.0  # of calls
AGE, GRACE = 1000, 5000  # ms: GOAWAY after about a second; in-flight calls get 5 s to finish
SLOW_ROWS = 100_000  # 'slow' (3-256-256-256-1) computes for a few hundred ms on these: in flight at a GOAWAY
ESTABLISHED = "01"  # /proc/net/tcp's code for the state


@pytest.fixture(scope="module")
def repository_with_slow_model(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("aging") / "models"
    shutil.copytree(ROOT / "models", models)
    built = run_cli("build", "--sizes", "3,256,256,256,1", "--activations", "relu", "--repository", models,
                    "--name", "slow")  # fmt: skip
    assert built.returncode == 0, built.stderr
    return models


def client_ports(server_port: int) -> set[int]:
    """The local ports of this machine's established connections to `server_port`: the client side of
    each (the server's side has it as its local port). gRPC's sockets are dual-stack, so its IPv4
    connections are listed in tcp6, as ::ffff:127.0.0.1."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote, state = line.split()[1:4]
            if state == ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def drive(server: ServerProcess) -> tuple[list[str], list[str], set[int]]:
    """Calls over one tritonclient channel for SECONDS: two threads of slow calls, one of quick ones.
    Returns the calls answered, the failures, and the client ports its connections used."""
    client = tc.InferenceServerClient(server.url)
    answered: list[str] = []
    failures: list[str] = []
    ports: set[int] = set()
    end = time.monotonic() + SECONDS

    def calls(model: str, rows: int) -> None:
        x = np.ones((rows, 3), np.float32)
        while time.monotonic() < end:
            tensor = tc.InferInput("x", [rows, 3], "FP32")
            tensor.set_data_from_numpy(x)
            try:
                y = client.infer(model, [tensor]).as_numpy("y")
            except InferenceServerException as exc:
                failures.append(f"{model}: {exc.status()} {exc.message()}")
                continue
            assert y.shape == (rows, 1), y.shape
            answered.append(model)

    def watch() -> None:
        while time.monotonic() < end + 0.5:  # the last calls finish after the end
            ports.update(client_ports(server.port))
            time.sleep(0.02)

    try:
        with ThreadPoolExecutor(4) as pool:
            runs = [pool.submit(calls, "slow", SLOW_ROWS), pool.submit(calls, "slow", SLOW_ROWS),
                    pool.submit(calls, "mlp_3_4_1", 4), pool.submit(watch)]  # fmt: skip
            for run in runs:
                run.result()
    finally:
        client.close()
    return answered, failures, ports


def aged(grace_ms: int) -> tuple[str, ...]:
    return "--grpc-max-connection-age", str(AGE), "--grpc-max-connection-age-grace", str(grace_ms)


def serve_and_drive(repository: Path, *flags: str) -> tuple[list[str], list[str], set[int]]:
    server = ServerProcess(repository, "--workers", "1", "--threads", "2", *flags)
    try:
        return drive(server)
    finally:
        assert server.stop() == 0, server.output()


def test_without_an_age_one_channel_keeps_one_connection(repository_with_slow_model):
    answered, failures, ports = serve_and_drive(repository_with_slow_model)
    assert failures == [] and "slow" in answered and "mlp_3_4_1" in answered, (failures, answered)
    assert len(ports) == 1, ports


def test_an_aged_channel_reconnects_and_no_call_fails(repository_with_slow_model):
    answered, failures, ports = serve_and_drive(repository_with_slow_model, *aged(GRACE))
    assert failures == [], failures
    assert "slow" in answered and "mlp_3_4_1" in answered, answered
    assert len(ports) >= 2, f"the channel kept one connection through {SECONDS} s at a {AGE} ms age: {ports}"


def test_a_grace_too_short_cuts_the_calls_in_flight(repository_with_slow_model):
    """The other side of the test above: slow calls are in flight when a GOAWAY comes, and without the
    grace to finish, they fail."""
    _, failures, ports = serve_and_drive(repository_with_slow_model, *aged(1))
    assert len(ports) >= 2 and failures, (ports, failures)
    assert all("UNAVAILABLE" in failure for failure in failures), failures
