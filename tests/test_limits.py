"""Limits of a worker: concurrent calls beyond the limit are refused, a call past its deadline is
not computed. Each against a real server with one handler thread, so the queue is easy to fill."""

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from forwardpass.builder.spec import Activation
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from harness import ROOT, ServerProcess, build_into
from numerics import random_spec

LIMITS = [("grpc.max_send_message_length", 64 * 2**20), ("grpc.max_receive_message_length", 64 * 2**20)]


def request(model, rows):
    x = np.random.default_rng(rows).standard_normal((rows, 3)).astype(np.float32)
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name="x", datatype="FP32", shape=x.shape)
    message.raw_input_contents.append(x.tobytes())
    return message


@pytest.fixture
def one_thread(tmp_path):
    shutil.copytree(ROOT / "models", tmp_path / "models")
    # 'slow' (3-256-256-256-1) on 200,000 rows computes for about half a second here.
    spec = random_spec(np.random.default_rng(3), (3, 256, 256, 256, 1), [Activation("relu")] * 4)
    build_into(tmp_path / "models", "slow", spec)
    server = ServerProcess(tmp_path / "models", "--workers", "1", "--threads", "1", "--max-concurrent-rpcs", "2")
    yield server
    assert server.stop() == 0


def successes(stub, model):
    return stub.ModelStatistics(pb.ModelStatisticsRequest(name=model)).model_stats[0].inference_stats.success.count


def test_calls_beyond_the_limit_are_resource_exhausted(one_thread):
    big = request("mlp_3_4_1", 1_000_000)
    with grpc.insecure_channel(one_thread.url, options=LIMITS) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(stub.ModelInfer, big, timeout=60) for _ in range(8)]
        codes = []
        for future in futures:
            try:
                future.result()
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
        assert "RESOURCE_EXHAUSTED" in codes and "OK" in codes, codes
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
        assert stub.ModelInfer(request("mlp_3_4_1", 2), timeout=30).raw_output_contents  # and it goes on


def test_a_call_whose_deadline_passed_in_the_queue_is_not_computed(one_thread):
    # 'slow' holds the only handler thread long past the small call's 50 ms, so the small call's
    # deadline passes in the queue and no race decides the outcome. The small call is above the 1 MiB of
    # raw bytes a worker answers on its event loop at once (INLINE_RAW_BYTES): it waits for the thread.
    big, small = request("slow", 200_000), request("mlp_3_4_1_sigmoid", 100_000)
    with grpc.insecure_channel(one_thread.url, options=LIMITS) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(small, timeout=30)  # computed when it has time: the counter works
        before = successes(stub, "mlp_3_4_1_sigmoid")
        started = time.monotonic()
        slow = stub.ModelInfer.future(big, timeout=60)
        time.sleep(0.2)  # the big call is on the only handler thread
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(small, timeout=0.05)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        slow.result()
        assert time.monotonic() - started > 0.3, "'slow' was too quick to hold the thread past the deadline"
        time.sleep(0.2)  # let the worker take the expired call off its queue
        # Dropped either by gRPC before the handler runs or by the handler's own deadline check.
        assert successes(stub, "mlp_3_4_1_sigmoid") == before
