"""The HTTP door's life beside gRPC's: it drains on SIGTERM, says not ready while it does, and its
requests are counted in the same metrics."""

import http.client
import json
import shutil
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest

from forwardpass.builder.readback import read_file

from harness import ROOT, ServerProcess, free_port, scrape
from numerics import assert_matches_oracle, random_input


@pytest.fixture
def committed(tmp_path):
    shutil.copytree(ROOT / "models", tmp_path / "models")
    return tmp_path / "models"


def post_infer(url: str, X: np.ndarray, model: str = "mlp_3_4_1") -> tuple[int, dict]:
    body = json.dumps({"inputs": [{"name": "x", "shape": [X.shape[1], 3], "datatype": "FP32",
                                   "data": X.T.ravel().tolist()}]})  # fmt: skip
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=60)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def get(url: str, path: str) -> int:
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_http_calls_in_flight_finish_on_sigterm_and_ready_turns_503(committed):
    # A batching delay of 1.5 s holds the calls inside the server when SIGTERM comes.
    config = committed / "mlp_3_4_1" / "config.pbtxt"
    config.write_text(config.read_text() + "dynamic_batching { max_queue_delay_microseconds: 1500000 }\n")
    server = ServerProcess(committed, "--grace", "30", "--workers", "1")
    X = random_input(np.random.default_rng(0), 3, 5, "float32")
    assert get(server.http_url, "/v2/health/ready") == 200
    answers = []
    callers = [threading.Thread(target=lambda: answers.append(post_infer(server.http_url, X))) for _ in range(4)]
    for caller in callers:
        caller.start()
    time.sleep(0.5)  # received, and waiting in the batcher
    server.process.send_signal(15)
    time.sleep(0.2)
    assert get(server.http_url, "/v2/health/ready") == 503  # draining: load balancers look elsewhere
    for caller in callers:
        caller.join(60)
    spec = read_file(committed / "mlp_3_4_1" / "1" / "model.onnx").spec
    assert [status for status, _ in answers] == [200] * 4
    for _, answer in answers:
        assert_matches_oracle(spec, X, np.array(answer["outputs"][0]["data"], np.float32).reshape(1, 5), "float32")
    assert server.process.wait(60) == 0, server.output()


def test_http_requests_are_counted_in_the_metrics(committed):
    port = free_port()
    server = ServerProcess(committed, "--workers", "2", "--metrics-port", str(port))
    try:
        X = random_input(np.random.default_rng(1), 3, 4, "float32")
        for _ in range(3):
            assert post_infer(server.http_url, X)[0] == 200
        assert post_infer(server.http_url, X, model="nope")[0] == 404
        values = scrape(port)
        assert values["nv_inference_request_success/mlp_3_4_1"] == 3
        assert values["nv_inference_count/mlp_3_4_1"] == 12
    finally:
        assert server.stop() == 0


def test_requests_beyond_the_http_limit_get_503_and_the_rest_are_answered(committed):
    # The batching delay holds the first request inside the worker while the second arrives.
    config = committed / "mlp_3_4_1" / "config.pbtxt"
    config.write_text(config.read_text() + "dynamic_batching { max_queue_delay_microseconds: 1500000 }\n")
    server = ServerProcess(committed, "--workers", "1", "--max-concurrent-rpcs", "1")
    try:
        X = random_input(np.random.default_rng(2), 3, 2, "float32")
        held = []
        first = threading.Thread(target=lambda: held.append(post_infer(server.http_url, X)))
        first.start()
        time.sleep(0.5)
        status, answer = post_infer(server.http_url, X)
        assert status == 503 and "more than 1 requests in flight" in answer["error"]
        first.join(30)
        assert held[0][0] == 200
        assert post_infer(server.http_url, X)[0] == 200  # the limit frees as calls end
    finally:
        assert server.stop() == 0
