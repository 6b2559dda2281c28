"""gRPC calls that send their headers but never their message hold no thread: health, live and
another client's inference are answered on time while 64 of them stay open."""

import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from forwardpass.client import Client
from forwardpass.protos import grpc_service_pb2 as pb

from harness import ROOT, TOKEN, ServerProcess

STALLED = 64  # calls held open with no message, more than a worker has threads of any kind
ROUNDS = 200  # of each probe
# Seconds a probe takes: within 100 ms, bar the odd one a busy 2-core test machine delays (5%, as the
# health-during-load test allows), and never near a second. Before, every probe hit its deadline.
ANSWER_WITHIN, LATE_SHARE, NEVER_OVER = 0.1, 0.05, 1.0
INFER = "/inference.GRPCInferenceService/ModelInfer"


def stalled_calls(channel: grpc.Channel, count: int, release: threading.Event, metadata=()) -> list[grpc.Future]:
    """`count` ModelInfer calls that send their headers and then wait, sending no message, until
    `release` is set. A client-streaming call sends its headers at once and a message only when its
    request iterator yields one; to the server it is a unary call whose message has not come."""

    def never():
        release.wait()
        return
        yield  # a generator that yields nothing

    call = channel.stream_unary(INFER, request_serializer=pb.ModelInferRequest.SerializeToString,
                                response_deserializer=pb.ModelInferResponse.FromString)  # fmt: skip
    return [call.future(never(), timeout=120, metadata=metadata) for _ in range(count)]


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


@pytest.fixture(params=["open", "token"])
def server(request, tmp_path):
    """One worker (2 handler threads by default), without a token or with one."""
    args = ["--workers", "1", "--no-http"]
    if request.param == "token":
        (tmp_path / "token").write_text(TOKEN + "\n")
        args += ["--auth-token-file", str(tmp_path / "token")]
    server = ServerProcess(ROOT / "models", *args)
    server.token = TOKEN if request.param == "token" else None
    yield server
    server.stop()


def test_calls_without_their_message_hold_up_no_other_call(server):
    auth = (("authorization", f"Bearer {server.token}"),) if server.token else ()
    release = threading.Event()
    hostile = grpc.insecure_channel(server.url)
    client = Client(server.url, timeout=5, token=server.token)
    health = grpc.insecure_channel(server.url)
    x = np.ones((1, 3), np.float32)
    try:
        grpc.channel_ready_future(hostile).result(timeout=10)
        stalled = stalled_calls(hostile, STALLED, release, auth)  # with the token: they pass the check
        time.sleep(0.5)  # their headers have reached the server
        assert not any(call.done() for call in stalled), "a stalled call ended before the probes"
        check = health_pb2_grpc.HealthStub(health).Check
        probes = {
            "Health.Check": lambda: check(health_pb2.HealthCheckRequest(), timeout=5),
            "ServerLive": lambda: client.live(),
            "ModelInfer": lambda: client.infer("mlp_3_4_1", x),
        }
        seconds = {name: [] for name in probes}
        for _ in range(ROUNDS):
            for name, probe in probes.items():
                seconds[name].append(timed(probe))
        assert not any(call.done() for call in stalled), "the stalled calls did not stay open through the probes"
        for call in stalled:  # the client ends them (as its deadline would): the server lets them go
            assert call.cancel()
        assert client.infer("mlp_3_4_1", x).shape == (1, 1)
    finally:
        release.set()
        client.close()
        health.close()
        hostile.close()
    for name, times in seconds.items():
        p99 = sorted(times)[int(0.99 * len(times)) - 1]
        late = [round(t * 1000) for t in times if t >= ANSWER_WITHIN]
        assert max(times) < NEVER_OVER, f"{name} took {max(times) * 1000:.0f} ms (p99 {p99 * 1000:.0f} ms)"
        assert len(late) <= LATE_SHARE * len(times), f"{name} took {late} ms of {len(times)} calls"


def test_a_call_without_the_token_is_refused_before_its_message(tmp_path):
    # The token is checked on the headers: a caller without it holds nothing open by never sending.
    (tmp_path / "token").write_text(TOKEN + "\n")
    server = ServerProcess(ROOT / "models", "--workers", "1", "--no-http", "--auth-token-file", str(tmp_path / "token"))
    release = threading.Event()
    channel = grpc.insecure_channel(server.url)
    try:
        (call,) = stalled_calls(channel, 1, release)
        assert call.exception(timeout=5).code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        release.set()
        channel.close()
        server.stop()
