"""Prometheus metrics summed over workers, and one structured log line per failed request."""

import json
import os
import signal
import time

import grpc
import numpy as np

from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from harness import answering_worker, assert_one_error_line, run_cli, scrape


def infer(url: str, model: str, rows: int) -> str:
    """One call on a connection of its own (so calls spread over workers); its status."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[rows, 3])
    request.raw_input_contents.append(np.ones((rows, 3), np.float32).tobytes())
    with grpc.insecure_channel(url, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        try:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name


def successes_per_worker(url: str) -> dict[str, int]:
    """Each worker's ModelStatistics, asked on connections until both pids have answered."""
    seen: dict[str, int] = {}
    for _ in range(60):
        with grpc.insecure_channel(url, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="mlp_3_4_1"), timeout=10).model_stats[0]
            seen[answering_worker(stub)] = stats.inference_stats.success.count
        if len(seen) == 2:
            break
    return seen


def test_metrics_count_every_worker_and_survive_a_restart(two_workers):
    server, port = two_workers
    codes = [infer(server.url, "mlp_3_4_1", 3) for _ in range(20)]
    codes += [infer(server.url, "mlp_3_4_1", 0) for _ in range(4)]  # empty batches: failures
    assert codes.count("OK") == 20 and codes.count("INVALID_ARGUMENT") == 4
    values = scrape(port)
    assert values["nv_inference_request_success/mlp_3_4_1"] == 20
    assert values["nv_inference_request_failure/mlp_3_4_1"] == 4
    assert values["nv_inference_count/mlp_3_4_1"] == 60  # rows
    assert values["nv_inference_exec_count/mlp_3_4_1"] == 20
    assert values["nv_inference_request_success/mlp_3_4_1_sigmoid"] == 0
    assert values["nv_inference_request_duration_us/mlp_3_4_1"] > 0
    per_worker = successes_per_worker(server.url)
    assert per_worker.values() and set(per_worker.values()) == {20}, per_worker  # each answers the server's count
    workers = [int(p) for p in open(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read().split()]
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while "restarting it" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # the replacement is up
    after = scrape(port)
    assert after["nv_inference_request_success/mlp_3_4_1"] == 20  # the replacement took up its predecessor's row
    assert set(successes_per_worker(server.url).values()) == {20}


def test_a_failed_request_is_one_structured_line(two_workers):
    server, _ = two_workers
    assert infer(server.url, "nope", 1) == "NOT_FOUND"
    time.sleep(0.2)
    lines = [line for line in server.output().splitlines() if '"event": "failed"' in line]
    record = json.loads(lines[-1].split("forwardpass.server.dataplane: ", 1)[1])
    assert record == {"event": "failed", "call": "infer", "model": "nope", "kind": "NOT_FOUND",
                      "reason": record["reason"]} and "unknown model 'nope'" in record["reason"]  # fmt: skip
    assert infer(server.url, "mlp_3_4_1", 1) == "OK"
    time.sleep(0.2)
    assert not any('"event": "request"' in line for line in server.output().splitlines())  # no line per success


def test_metrics_port_in_use_is_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", "0", "--http-port", "0", "--metrics-port", port)
        assert_one_error_line(result, f"127.0.0.1:{port} (metrics): it is in use", logs_allowed=True)


def test_label_values_are_escaped_as_the_text_format_requires():
    from forwardpass.server.metrics import render
    from forwardpass.server.stats import Statistics, StatisticsTable

    table, stats = StatisticsTable(slots=1, workers=1), Statistics()
    table.serve(0, {('a"b\\c\nd', "1"): stats})
    for _ in range(3):
        stats.record_success(1, 0, 0, 0)
    lines = render(table).splitlines()
    assert 'nv_inference_request_success{model="a\\"b\\\\c\\nd",version="1"} 3' in lines
    assert not any(line.startswith("d") for line in lines)  # the line feed did not end the sample's line
