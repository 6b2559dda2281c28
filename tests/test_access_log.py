"""The access log (--log-requests): one structured line per request, the same from both doors, written
by the data plane's Access record, through a real server and real clients (grpc's stub, http.client)."""

from __future__ import annotations

import http.client
import json
import shutil
import time

import grpc
import numpy as np
import pytest

from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from harness import ROOT, ServerProcess

LOGGER = "forwardpass.server.dataplane: "
FIELDS = {"event", "door", "call", "model", "version", "status", "rows", "us", "id"}  # no trace_id: nothing is traced
INLINE_ROWS = 2
THREAD_ROWS = 100_000  # 1.2 MB of float32: above the data plane's INLINE_RAW_BYTES, so both doors run it on a thread


def access_lines(server: ServerProcess, count: int) -> list[dict]:
    """The access lines the server wrote, once there are `count` of them (a line may follow its answer)."""
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line.split(LOGGER, 1)[1]) for line in list(server.lines) if '"event": "request"' in line]
        if len(records) >= count or time.monotonic() > deadline:
            time.sleep(0.3)  # and no more than that: a second line for one request would show here
            return [json.loads(line.split(LOGGER, 1)[1]) for line in server.lines if '"event": "request"' in line]
        time.sleep(0.05)


def grpc_infer(stub, model: str, rows: int, id: str = "") -> str:
    """A ModelInfer of `rows` rows of ones; its status code's name."""
    request = pb.ModelInferRequest(model_name=model, id=id)
    request.inputs.add(name="x", datatype="FP32", shape=[rows, 3])
    request.raw_input_contents.append(np.ones((rows, 3), np.float32).tobytes())
    try:
        stub.ModelInfer(request, timeout=30)
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name


def http_call(server: ServerProcess, method: str, path: str, document: dict | None = None) -> int:
    """One HTTP request on a connection of its own; its status."""
    connection = http.client.HTTPConnection(server.http_url.removeprefix("http://"), timeout=30)
    try:
        body = json.dumps(document).encode() if document is not None else None
        connection.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def json_request(rows: int, id: str = "") -> dict:
    return {"id": id, "inputs": [{"name": "x", "shape": [rows, 3], "datatype": "FP32", "data": [1.0] * (rows * 3)}]}


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("access")
    shutil.copytree(ROOT / "models", root / "models")
    return root / "models"


@pytest.fixture(scope="module")
def logged(repository):
    server = ServerProcess(repository, "--workers", "1", "--log-requests")
    yield server
    server.stop()


def test_every_request_is_one_line_with_its_doors_status(logged):
    with grpc.insecure_channel(logged.url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert grpc_infer(stub, "mlp_3_4_1", INLINE_ROWS, id="g-ok") == "OK"
        assert grpc_infer(stub, "mlp_3_4_1", THREAD_ROWS, id="g-thread") == "OK"
        assert grpc_infer(stub, "nope", 1, id="g-missing") == "NOT_FOUND"
        assert grpc_infer(stub, "mlp_3_4_1", 0, id="g-empty") == "INVALID_ARGUMENT"
        stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp_3_4_1", version="1"), timeout=10)
    assert http_call(logged, "POST", "/v2/models/mlp_3_4_1/infer", json_request(INLINE_ROWS, "h-ok")) == 200
    assert http_call(logged, "POST", "/v2/models/mlp_3_4_1/infer", json_request(THREAD_ROWS, "h-thread")) == 200
    assert http_call(logged, "POST", "/v2/models/nope/versions/3/infer", json_request(1, "h-missing")) == 404
    assert http_call(logged, "POST", "/v2/models/mlp_3_4_1/infer", json_request(0, "h-empty")) == 400
    assert http_call(logged, "GET", "/v2/health/ready") == 200

    records = access_lines(logged, 10)
    assert len(records) == 10, records
    assert all(set(r) == FIELDS and r["event"] == "request" and r["us"] >= 0 for r in records), records
    got = [(r["door"], r["call"], r["model"], r["version"], r["status"], r["rows"], r["id"]) for r in records]
    assert sorted(got, key=str) == sorted([
        ("grpc", "ModelInfer", "mlp_3_4_1", "1", "OK", INLINE_ROWS, "g-ok"),  # the version that answered
        ("grpc", "ModelInfer", "mlp_3_4_1", "1", "OK", THREAD_ROWS, "g-thread"),  # filled in on a handler thread
        ("grpc", "ModelInfer", "nope", "", "NOT_FOUND", None, "g-missing"),
        ("grpc", "ModelInfer", "mlp_3_4_1", "", "INVALID_ARGUMENT", None, "g-empty"),
        ("grpc", "ModelMetadata", "mlp_3_4_1", "1", "OK", None, ""),
        ("http", "POST /v2/models/mlp_3_4_1/infer", "mlp_3_4_1", "1", "200", INLINE_ROWS, "h-ok"),
        ("http", "POST /v2/models/mlp_3_4_1/infer", "mlp_3_4_1", "1", "200", THREAD_ROWS, "h-thread"),
        ("http", "POST /v2/models/nope/versions/3/infer", "nope", "3", "404", None, "h-missing"),
        ("http", "POST /v2/models/mlp_3_4_1/infer", "mlp_3_4_1", "", "400", None, "h-empty"),
        ("http", "GET /v2/health/ready", "", "", "200", None, ""),
    ], key=str)  # fmt: skip


def test_an_access_line_cuts_a_callers_strings(logged):
    before = len(access_lines(logged, 0))
    long_id = "i" * 100_000
    with grpc.insecure_channel(logged.url) as channel:
        assert grpc_infer(pb_grpc.GRPCInferenceServiceStub(channel), "mlp_3_4_1", 1, id=long_id) == "OK"
    assert http_call(logged, "POST", "/v2/models/" + "m" * 60_000 + "/infer", json_request(1, long_id)) == 404
    records = access_lines(logged, before + 2)[before:]
    lines = [line for line in logged.lines if '"event": "request"' in line][before:]
    assert len(records) == 2, records
    assert all(len(line) < 2000 for line in lines), max(map(len, lines))
    assert all(r["id"] == "i" * 256 + "... (100000 characters)" for r in records), records
    http = next(r for r in records if r["door"] == "http")
    assert http["model"] == "m" * 256 + "... (60000 characters)" and http["call"].endswith(" characters)"), http


def test_without_the_flag_no_request_gets_a_line(repository):
    server = ServerProcess(repository, "--workers", "1")
    try:
        with grpc.insecure_channel(server.url) as channel:
            assert grpc_infer(pb_grpc.GRPCInferenceServiceStub(channel), "mlp_3_4_1", 1) == "OK"
        assert http_call(server, "POST", "/v2/models/mlp_3_4_1/infer", json_request(1)) == 200
        assert http_call(server, "POST", "/v2/models/nope/infer", json_request(1)) == 404
        time.sleep(0.3)
        assert '"event": "failed"' in server.output()  # the failure's own line, always written
        assert '"event": "request"' not in server.output()
    finally:
        server.stop()
