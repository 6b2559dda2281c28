"""The HTTP/REST front door through a real socket, with the standard library's http.client: every
endpoint and its JSON, tensors as JSON (flat and nested), as Triton's binary extension and both
mixed, compressed and chunked bodies, the oracle's answers, and every bad input of the kind
Triton's HTTP QA sends, each followed by a valid request that still gets the oracle's answer."""

from __future__ import annotations

import functools
import gzip
import http.client
import json
import shutil
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import pytest

from forwardpass.builder.readback import read_file

from harness import ROOT, ServerProcess
from numerics import assert_matches_oracle, random_input

DTYPES = {"FP32": np.float32, "FP64": np.float64}
DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64"}
TOKEN = "http-token-for-tests"
HEADER = "Inference-Header-Content-Length"


# The wire, as a client sees it


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        assert self.headers.get("Content-Type", "").startswith("application/json"), self.headers
        return json.loads(self.body)


def address(server) -> tuple[str, int]:
    parts = urlsplit(server.http_url)
    return parts.hostname, parts.port


def call(server, method: str, path: str, body=None, headers=None, connection=None, **options) -> Answer:
    """One request; on `connection` when given (kept open), else on a connection of its own."""
    own = connection is None
    connection = connection or http.client.HTTPConnection(*address(server), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {}, **options)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        if own:
            connection.close()


def infer_path(model: str, version: str = "") -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"


def tensor(x: np.ndarray, name: str = "x", nested: bool = False) -> dict:
    """An input as JSON data, flat or nested (both row-major)."""
    data = x.tolist() if nested else x.ravel().tolist()
    return {"name": name, "shape": list(x.shape), "datatype": DATATYPES[x.dtype], "data": data}


def binary_body(document: dict, *blobs: bytes) -> tuple[bytes, dict]:
    """A JSON header followed by raw bytes, as Triton's binary extension sends them."""
    header = json.dumps(document).encode()
    return header + b"".join(blobs), {HEADER: str(len(header)), "Content-Type": "application/octet-stream"}


def binary_input(x: np.ndarray, name: str = "x") -> dict:
    return {
        "name": name,
        "shape": list(x.shape),
        "datatype": DATATYPES[x.dtype],
        "parameters": {"binary_data_size": x.nbytes},
    }


def infer_json(server, model: str, x: np.ndarray, name: str = "x", version: str = "", **document) -> Answer:
    body = json.dumps({"inputs": [tensor(x, name)], **document}).encode()
    return call(server, "POST", infer_path(model, version), body, {"Content-Type": "application/json"})


@dataclass
class Decoded:
    header: dict
    arrays: dict[str, np.ndarray]
    binary: set[str]  # the outputs that came as bytes after the JSON


def decode(answer: Answer) -> Decoded:
    """An infer answer: JSON outputs and binary ones, whichever the server sent."""
    assert answer.status == 200, (answer.status, answer.body[:500])
    length = answer.headers.get(HEADER)
    if length is None:
        assert answer.headers.get("Content-Type") == "application/json", answer.headers
    else:
        assert answer.headers.get("Content-Type") == "application/octet-stream", answer.headers
    split = len(answer.body) if length is None else int(length)
    header = json.loads(answer.body[:split])
    offset, arrays, binary = split, {}, set()
    for output in header["outputs"]:
        dtype = DTYPES[output["datatype"]]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            arrays[output["name"]] = np.asarray(output["data"], dtype=dtype).reshape(output["shape"])
        else:
            assert "data" not in output, output
            arrays[output["name"]] = np.frombuffer(answer.body[offset : offset + size], dtype).reshape(output["shape"])
            offset += size
            binary.add(output["name"])
    assert offset == len(answer.body), "bytes left over after the outputs"
    return Decoded(header, arrays, binary)


def assert_error(answer: Answer, status: int, *fragments: str) -> str:
    """A refusal: the status, `{"error": message}` as application/json, the message naming the problem."""
    assert answer.status == status, (answer.status, answer.body[:500])
    assert answer.headers.get("Content-Type") == "application/json", answer.headers
    message = json.loads(answer.body)["error"]
    assert isinstance(message, str) and message
    for fragment in fragments:
        assert fragment in message, message
    return message


# The oracle


@functools.cache
def _spec(path: str):
    return read_file(path).spec


def spec_of(repository, name: str, version: int | None = None):
    folder = repository / name
    version = version or max(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    return _spec(str(folder / str(version) / "model.onnx"))


def assert_still_answers(server, repository, seed: int = 99) -> None:
    """A valid request after a bad one gets the oracle's answer."""
    X = random_input(np.random.default_rng(seed), 3, 4, "float32")
    y = decode(infer_json(server, "mlp_3_4_1", np.ascontiguousarray(X.T))).arrays["y"]
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, y.T, "float32")


def rows(seed: int, batch: int, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """X in columns for the oracle and x in rows for the wire."""
    X = random_input(np.random.default_rng(seed), 3, batch, dtype)
    return X, np.ascontiguousarray(X.T)


# Servers of this module's own


@pytest.fixture(scope="module")
def limited(repository):
    """One worker (so its counters are the ones every call sees) and a 1 MiB message limit."""
    server = ServerProcess(repository, "--workers", "1", "--max-message-mb", "1", "--skip-bad-models")
    yield server
    assert server.stop() == 0, server.output()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guarded")
    shutil.copytree(ROOT / "models", folder / "models")
    (folder / "token").write_text(TOKEN + "\n")
    server = ServerProcess(folder / "models", "--workers", "1", "--auth-token-file", str(folder / "token"))
    yield server
    assert server.stop() == 0, server.output()
    assert TOKEN not in server.output()


@pytest.fixture(scope="module")
def explicit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explicit")
    shutil.copytree(ROOT / "models", folder / "models")
    server = ServerProcess(
        folder / "models", "--workers", "1", "--model-control-mode", "explicit", "--load-model", "mlp_3_4_1"
    )
    yield server
    assert server.stop() == 0, server.output()


# Health and metadata


def test_server_serves_http_beside_grpc(server):
    assert server.http_url.startswith("http://127.0.0.1:") and address(server)[1] != server.port
    assert server.http_url in server.output()


def test_health_live_and_ready(server):
    for path, key in (("/v2/health/live", "live"), ("/v2/health/ready", "ready")):
        answer = call(server, "GET", path)
        assert answer.status == 200 and answer.json() == {key: True}


def test_server_metadata(server):
    answer = call(server, "GET", "/v2")
    assert answer.status == 200
    meta = answer.json()
    assert meta["name"] == "forwardpass" and isinstance(meta["version"], str) and meta["version"]
    assert {"binary_tensor_data", "model_configuration", "model_repository", "statistics"} <= set(meta["extensions"])


def test_model_metadata_has_tritons_shapes_as_numbers(server):
    answer = call(server, "GET", "/v2/models/mlp_3_4_1")
    assert answer.status == 200
    assert answer.json() == {
        "name": "mlp_3_4_1",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }
    columns = call(server, "GET", "/v2/models/columns").json()
    assert columns["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [3, -1]}]
    assert call(server, "GET", "/v2/models/double").json()["inputs"][0]["datatype"] == "FP64"
    hidden = call(server, "GET", "/v2/models/hidden").json()
    assert [o["name"] for o in hidden["outputs"]] == ["y", "Z1", "A1", "Z2", "A2", "Z3"]
    versioned = call(server, "GET", "/v2/models/versions/versions/1")
    assert versioned.status == 200 and versioned.json()["versions"] == ["1", "2"]


def test_model_ready(server):
    for path in ("/v2/models/mlp_3_4_1/ready", "/v2/models/versions/versions/1/ready"):
        answer = call(server, "GET", path)
        assert answer.status == 200 and answer.json()["ready"] is True, path
    assert call(server, "GET", "/v2/models/mlp_3_4_1/ready").json() == {"name": "mlp_3_4_1", "ready": True}
    for path in ("/v2/models/broken/ready", "/v2/models/nope/ready", "/v2/models/latest/versions/1/ready"):
        answer = call(server, "GET", path)
        assert not 200 <= answer.status < 300, path  # not ready is any non-2xx, as tritonclient and KServe read it
    assert_error(call(server, "GET", "/v2/models/versions/versions/01/ready"), 400, "'01'")


def test_model_config_is_tritons_json(server):
    answer = call(server, "GET", "/v2/models/small/config")
    assert answer.status == 200
    config = answer.json()
    assert (config["name"], config["platform"], config["max_batch_size"]) == ("small", "onnxruntime_onnx", 8)
    assert "dynamic_batching" in config
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("x", "TYPE_FP32", [3])]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [("y", "TYPE_FP32", [1])]
    columns = call(server, "GET", "/v2/models/columns/config").json()
    assert columns["max_batch_size"] == 0 and columns["input"][0]["dims"] == [3, -1]
    assert call(server, "GET", "/v2/models/double/versions/1/config").json()["input"][0]["data_type"] == "TYPE_FP64"
    assert "all" in call(server, "GET", "/v2/models/versions/config").json()["version_policy"]


# GET /v2/models/mlp_3_4_1/config as it was written before the HTTP door stopped walking protobuf
# descriptors itself: every scalar written, enums by name, dims as numbers, empty maps left out.
MLP_3_4_1_CONFIG = (
    '{"name":"mlp_3_4_1","platform":"onnxruntime_onnx","backend":"","runtime":"","max_batch_size":1048576'
    ',"input":[{"name":"x","data_type":"TYPE_FP32","format":"FORMAT_NONE","dims":[3],"is_shape_tensor":fa'
    'lse,"allow_ragged_batch":false,"optional":false,"is_non_linear_format_io":false}],"output":[{"name":'
    '"y","data_type":"TYPE_FP32","dims":[1],"label_filename":"","is_shape_tensor":false,"is_non_linear_fo'
    'rmat_io":false}],"batch_input":[],"batch_output":[],"instance_group":[],"default_model_filename":"",'
    '"model_warmup":[]}'
)


def test_committed_model_config_json_is_unchanged_byte_for_byte(server):
    answer = call(server, "GET", "/v2/models/mlp_3_4_1/config")
    assert (answer.status, answer.body.decode()) == (200, MLP_3_4_1_CONFIG)


def test_the_http_door_writes_its_json_without_the_grpc_codec():
    # protobuf's descriptor API changes between majors (7 removed FieldDescriptor.label): the HTTP
    # door renders plain values, and the gRPC door's messages stay the gRPC door's.
    import ast

    for module in ("rest.py", "restcodec.py"):
        tree = ast.parse((ROOT / "server" / module).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {"codec", "grpc_service_pb2", "forwardpass.protos.grpc_service_pb2"} & imported, module


def assert_stats_entry(entry: dict) -> None:
    assert isinstance(entry["name"], str) and isinstance(entry["version"], str)
    for key in ("last_inference", "inference_count", "execution_count"):
        assert type(entry[key]) is int, (key, entry)
    for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        counts = entry["inference_stats"][key]
        assert type(counts["count"]) is int and type(counts["ns"]) is int, (key, entry)
    for batch in entry["batch_stats"]:  # Triton's InferBatchStatistics: one per batch size run
        assert type(batch["batch_size"]) is int, entry
        for key in ("compute_input", "compute_infer", "compute_output"):
            assert type(batch[key]["count"]) is int and type(batch[key]["ns"]) is int, (key, entry)


def test_statistics_have_integer_counts(server):
    every = call(server, "GET", "/v2/models/stats")
    assert every.status == 200
    entries = every.json()["model_stats"]
    for entry in entries:
        assert_stats_entry(entry)
    assert {(e["name"], e["version"]) for e in entries} >= {("mlp_3_4_1", "1"), ("versions", "1"), ("versions", "2")}
    one = call(server, "GET", "/v2/models/versions/versions/1/stats").json()["model_stats"]
    assert [(e["name"], e["version"]) for e in one] == [("versions", "1")]
    model = call(server, "GET", "/v2/models/versions/stats").json()["model_stats"]
    assert {e["version"] for e in model} == {"1", "2"}


def test_statistics_count_rows_runs_and_failures(limited):
    def stats(connection):
        answer = call(limited, "GET", "/v2/models/mlp_3_4_1_sigmoid/stats", connection=connection)
        assert answer.status == 200
        (entry,) = answer.json()["model_stats"]
        assert_stats_entry(entry)
        return entry

    connection = http.client.HTTPConnection(*address(limited), timeout=30)
    try:
        before = stats(connection)
        x = np.ones((5, 3), np.float32)
        body = json.dumps({"inputs": [tensor(x)]}).encode()
        assert call(limited, "POST", infer_path("mlp_3_4_1_sigmoid"), body, connection=connection).status == 200
        bad = json.dumps({"inputs": [tensor(np.ones((1, 4), np.float32))]}).encode()
        assert call(limited, "POST", infer_path("mlp_3_4_1_sigmoid"), bad, connection=connection).status == 400
        after = stats(connection)
    finally:
        connection.close()
    assert after["inference_count"] == before["inference_count"] + 5
    assert after["execution_count"] == before["execution_count"] + 1
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"] + 1
    assert after["last_inference"] > 0
    runs = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    assert runs[5] == {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}.get(5, 0) + 1


@pytest.mark.parametrize("body", [None, b"{}", b'{"ready": false}'])
def test_repository_index_is_a_list_with_the_bad_model_and_why(server, repository, body):
    answer = call(server, "POST", "/v2/repository/index", body)
    assert answer.status == 200
    index = answer.json()
    assert isinstance(index, list)
    assert all(set(row) == {"name", "version", "state", "reason"} for row in index), index
    rows = {(row["name"], row["version"]): (row["state"], row["reason"]) for row in index}
    assert rows[("mlp_3_4_1", "1")] == ("READY", "")
    assert rows[("versions", "1")][0] == rows[("versions", "2")][0] == "READY"
    state, reason = rows[("broken", "")]
    assert state == "UNAVAILABLE" and "not an ONNX model" in reason
    # the file, named inside the repository: where the server keeps its repository is not shown
    assert reason.startswith("broken/1/model.onnx: ") and str(repository.parent) not in reason, reason


def test_repository_index_of_ready_models_only(server):
    index = call(server, "POST", "/v2/repository/index", b'{"ready": true}').json()
    names = {row["name"] for row in index}
    assert "mlp_3_4_1" in names and "broken" not in names


def test_load_and_unload_are_not_implemented_outside_explicit_mode(server, repository):
    for action in ("load", "unload"):
        answer = call(server, "POST", f"/v2/repository/models/mlp_3_4_1/{action}")
        assert_error(answer, 501, "model control mode 'none'")
    assert_still_answers(server, repository)


def test_explicit_mode_loads_and_unloads(explicit):
    def ready(model):
        return call(explicit, "GET", f"/v2/models/{model}/ready").status == 200

    def eventually(condition):
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.1)

    assert ready("mlp_3_4_1") and not ready("mlp_3_4_1_sigmoid")
    answer = call(explicit, "POST", "/v2/repository/models/mlp_3_4_1_sigmoid/load")
    assert answer.status == 200, answer.body
    eventually(lambda: ready("mlp_3_4_1_sigmoid"))
    X, x = rows(11, 3)
    y = decode(infer_json(explicit, "mlp_3_4_1_sigmoid", x)).arrays["y"]
    assert_matches_oracle(spec_of(ROOT / "models", "mlp_3_4_1_sigmoid"), X, y.T, "float32")
    answer = call(explicit, "POST", "/v2/repository/models/mlp_3_4_1/unload", b"{}")
    assert answer.status == 200, answer.body
    eventually(lambda: not ready("mlp_3_4_1"))
    assert infer_json(explicit, "mlp_3_4_1", x).status in (404, 503)
    assert_error(call(explicit, "POST", "/v2/repository/models/nope/load"), 404, "'nope'")
    assert_error(call(explicit, "POST", "/v2/repository/models/..%2Fevil/load"), 400, "not a model folder name")
    refused = json.dumps({"parameters": {"config": '{"max_batch_size": 1}'}}).encode()
    assert_error(call(explicit, "POST", "/v2/repository/models/mlp_3_4_1/load", refused), 400, "'config'")


# Inference: the encodings, against the oracle


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
@pytest.mark.parametrize("batch", [1, 7, 1024])
@pytest.mark.parametrize("model", ["mlp_3_4_1", "mlp_3_4_1_sigmoid"])
def test_json_infer_matches_the_oracle(server, repository, model, batch, nested):
    X, x = rows(batch, batch)
    body = json.dumps({"id": f"json-{batch}", "inputs": [tensor(x, nested=nested)]}).encode()
    decoded = decode(call(server, "POST", infer_path(model), body, {"Content-Type": "application/json"}))
    header = decoded.header
    assert (header["model_name"], header["model_version"], header["id"]) == (model, "1", f"json-{batch}")
    (output,) = header["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("y", "FP32", [batch, 1])
    assert decoded.binary == set()
    assert_matches_oracle(spec_of(repository, model), X, decoded.arrays["y"].T, "float32")


@pytest.mark.parametrize("batch", [1, 7, 65536])
def test_binary_input_and_output_match_the_oracle(server, repository, batch):
    X, x = rows(batch, batch)
    body, headers = binary_body(
        {"id": "b", "inputs": [binary_input(x)], "parameters": {"binary_data_output": True}}, x.tobytes()
    )
    decoded = decode(call(server, "POST", infer_path("mlp_3_4_1"), body, headers))
    assert decoded.binary == {"y"} and decoded.header["id"] == "b"
    assert decoded.header["outputs"][0]["parameters"]["binary_data_size"] == batch * 4
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, decoded.arrays["y"].T, "float32")


def test_binary_input_with_json_output(server, repository):
    X, x = rows(3, 6)
    body, headers = binary_body({"inputs": [binary_input(x)]}, x.tobytes())
    decoded = decode(call(server, "POST", infer_path("mlp_3_4_1"), body, headers))
    assert decoded.binary == set()
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, decoded.arrays["y"].T, "float32")
    # binary_data_output asks for bytes, and the output's own binary_data: false overrides it
    document = {
        "inputs": [binary_input(x)],
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}],
    }
    body, headers = binary_body(document, x.tobytes())
    decoded = decode(call(server, "POST", infer_path("mlp_3_4_1"), body, headers))
    assert decoded.binary == set()
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, decoded.arrays["y"].T, "float32")


def test_json_input_with_binary_output(server, repository):
    X, x = rows(4, 5)
    for document in (
        {"inputs": [tensor(x)], "outputs": [{"name": "y", "parameters": {"binary_data": True}}]},
        {"inputs": [tensor(x)], "parameters": {"binary_data_output": True}},
    ):
        decoded = decode(call(server, "POST", infer_path("mlp_3_4_1"), json.dumps(document).encode()))
        assert decoded.binary == {"y"}
        assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, decoded.arrays["y"].T, "float32")


def test_hidden_outputs_by_name_some_binary_some_json(server, repository):
    spec = spec_of(repository, "hidden")
    X, x = rows(5, 6)
    outputs = [
        {"name": "A2", "parameters": {"binary_data": True}},
        {"name": "Z1"},
        {"name": "y", "parameters": {"binary_data": False}},
        {"name": "Z3", "parameters": {"binary_data": True}},
    ]
    body, headers = binary_body({"inputs": [binary_input(x)], "outputs": outputs}, x.tobytes())
    decoded = decode(call(server, "POST", infer_path("hidden"), body, headers))
    assert [o["name"] for o in decoded.header["outputs"]] == ["A2", "Z1", "y", "Z3"]
    assert decoded.binary == {"A2", "Z3"}
    for name in ("A2", "Z1", "Z3"):
        assert_matches_oracle(spec, X, decoded.arrays[name].T, "float32", layer=name)
    assert_matches_oracle(spec, X, decoded.arrays["y"].T, "float32")
    everything = decode(infer_json(server, "hidden", x))
    assert [o["name"] for o in everything.header["outputs"]] == ["y", "Z1", "A1", "Z2", "A2", "Z3"]
    for name in ("Z1", "A1", "Z2", "A2", "Z3"):
        assert_matches_oracle(spec, X, everything.arrays[name].T, "float32", layer=name)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_float64_model(server, repository, binary):
    X, x = rows(6, 9, "float64")
    if binary:
        document = {"inputs": [binary_input(x)], "parameters": {"binary_data_output": True}}
        body, headers = binary_body(document, x.tobytes())
        decoded = decode(call(server, "POST", infer_path("double"), body, headers))
    else:
        decoded = decode(infer_json(server, "double", x))
    assert decoded.header["outputs"][0]["datatype"] == "FP64"
    assert_matches_oracle(spec_of(repository, "double"), X, decoded.arrays["y"].T, "float64")


def test_columns_layout(server, repository):
    X = random_input(np.random.default_rng(7), 3, 9, "float32")
    decoded = decode(infer_json(server, "columns", X, name="X"))
    assert decoded.header["outputs"][0]["name"] == "Y" and decoded.header["outputs"][0]["shape"] == [1, 9]
    assert_matches_oracle(spec_of(repository, "columns"), X, decoded.arrays["Y"], "float32")
    body = json.dumps({"inputs": [tensor(X, name="X", nested=True)]}).encode()
    decoded = decode(call(server, "POST", infer_path("columns"), body))
    assert_matches_oracle(spec_of(repository, "columns"), X, decoded.arrays["Y"], "float32")


def test_version_in_the_path_picks_among_the_loaded(server, repository):
    X, x = rows(8, 3)
    for version in ("1", "2"):
        decoded = decode(infer_json(server, "versions", x, version=version))
        assert decoded.header["model_version"] == version
        assert_matches_oracle(spec_of(repository, "versions", int(version)), X, decoded.arrays["y"].T, "float32")
    assert decode(infer_json(server, "versions", x)).header["model_version"] == "2"  # the latest by default


@pytest.mark.parametrize("model", ["mlp_3_4_1", "double"])
def test_raw_single_input_body_is_one_row(server, repository, model):
    dtype = "float64" if model == "double" else "float32"
    X, x = rows(9, 1, dtype)
    headers = {HEADER: "0", "Content-Type": "application/octet-stream"}
    decoded = decode(call(server, "POST", infer_path(model), x.tobytes(), headers))
    assert decoded.arrays["y"].shape == (1, 1)
    assert_matches_oracle(spec_of(repository, model), X, decoded.arrays["y"].T, dtype)


def test_raw_body_for_a_columns_model_is_as_many_columns_as_it_holds(server, repository):
    X = random_input(np.random.default_rng(17), 3, 5, "float32")
    decoded = decode(call(server, "POST", infer_path("columns"), X.tobytes(), {HEADER: "0"}))
    assert decoded.arrays["Y"].shape == (1, 5)
    assert_matches_oracle(spec_of(repository, "columns"), X, decoded.arrays["Y"], "float32")
    assert_error(call(server, "POST", infer_path("columns"), X.tobytes()[:-4], {HEADER: "0"}), 400, "columns")
    assert_still_answers(server, repository)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_compressed_bodies(server, repository, encoding, binary):
    X, x = rows(10, 7)
    if binary:
        body, headers = binary_body({"inputs": [binary_input(x)]}, x.tobytes())
    else:
        body, headers = json.dumps({"inputs": [tensor(x)]}).encode(), {"Content-Type": "application/json"}
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)  # deflate is zlib's format
    decoded = decode(call(server, "POST", infer_path("mlp_3_4_1"), packed, {**headers, "Content-Encoding": encoding}))
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, decoded.arrays["y"].T, "float32")


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", None, "application/json; charset=utf-8"]
)
def test_json_is_read_whatever_the_content_type(server, repository, content_type):
    X, x = rows(12, 2)
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"inputs": [tensor(x)]}).encode()
    decoded = decode(call(server, "POST", infer_path("mlp_3_4_1"), body, headers))
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, decoded.arrays["y"].T, "float32")


def test_chunked_body(server, repository):
    X, x = rows(13, 3)
    body = json.dumps({"inputs": [tensor(x)]}).encode()
    parts = iter([body[:10], body[10:40], body[40:]])
    decoded = decode(call(server, "POST", infer_path("mlp_3_4_1"), parts, encode_chunked=True))
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, decoded.arrays["y"].T, "float32")


def test_fields_the_kserve_sdk_adds_are_accepted(server, repository):
    X, x = rows(14, 2)
    body = json.dumps({"id": "k", "model_name": "mlp_3_4_1", "inputs": [tensor(x)]}).encode()
    decoded = decode(call(server, "POST", infer_path("mlp_3_4_1"), body))
    assert decoded.header["id"] == "k"
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, decoded.arrays["y"].T, "float32")


def test_many_requests_on_one_kept_alive_connection(server, repository):
    connection = http.client.HTTPConnection(*address(server), timeout=30)
    try:
        for seed in range(5):
            X, x = rows(100 + seed, 3)
            body = json.dumps({"inputs": [tensor(x)]}).encode()
            decoded = decode(call(server, "POST", infer_path("mlp_3_4_1"), body, connection=connection))
            assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, decoded.arrays["y"].T, "float32")
    finally:
        connection.close()


def test_nan_in_is_nan_out_and_json_writes_it_as_a_string(server):
    x = np.array([[np.nan, 0.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
    document = {"inputs": [binary_input(x)], "outputs": [{"name": "y", "parameters": {"binary_data": False}}]}
    body, headers = binary_body(document, x.tobytes())
    answer = call(server, "POST", infer_path("mlp_3_4_1_sigmoid"), body, headers)
    assert answer.status == 200, answer.body
    data = json.loads(answer.body)["outputs"][0]["data"]  # strict JSON: no bare NaN token
    assert data[0] == "NaN" and isinstance(data[1], float) and np.isfinite(data[1])
    document["outputs"][0]["parameters"]["binary_data"] = True
    body, headers = binary_body(document, x.tobytes())
    y = decode(call(server, "POST", infer_path("mlp_3_4_1_sigmoid"), body, headers)).arrays["y"]
    assert np.isnan(y[0, 0]) and np.isfinite(y[1, 0])


# Bad input: its status, a message naming the problem, and the server keeps serving


def _post(body, headers=None, model="mlp_3_4_1", version=""):
    return ("POST", infer_path(model, version), body, headers or {})


def _doc(*inputs, **fields):
    return _post(json.dumps({"inputs": list(inputs), **fields}).encode())


def _one(**changes):
    return {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3], **changes}


def _binary(declared, sent, length=None):
    x = np.zeros((1, 3), np.float32)
    body, headers = binary_body(
        {"inputs": [{**binary_input(x), "parameters": {"binary_data_size": declared}}]}, b"\0" * sent
    )
    if length is not None:
        headers[HEADER] = length(int(headers[HEADER]), len(body))
    return _post(body, headers)


DEEP = 30_000  # under 64 KiB: orjson meets it (a larger body is refused unparsed: test_http_limits)
VALID = json.dumps({"inputs": [_one()]}).encode()
NESTED_TOO_DEEP = (
    b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": ' + b"[" * DEEP + b"]" * DEEP + b"}]}"
)
BAD = {
    "malformed JSON": (_post(b'{"inputs": [{"name": "x", '), 400, "not valid JSON"),
    "JSON that is not an object": (_post(b"[1, 2, 3]"), 400, "JSON object"),
    "empty body": (_post(b""), 400, ""),
    "nested deeper than the parser goes": (_post(NESTED_TOO_DEEP), 400, "deeper than 1,024 levels"),
    "unclosed deep nesting": (_post(b"[" * DEEP), 400, ""),
    "data count not the shape": (_doc(_one(shape=[2, 3])), 400, "shape [2, 3] needs 6"),
    "ragged nested data": (_doc(_one(shape=[2, 3], data=[[1, 2, 3], [4, 5]])), 400, "'x'"),
    "a dim of 2^60": (_doc(_one(shape=[2**60, 3])), 400, "max_batch_size"),
    "a dim of 2^60 on a columns model": (
        _post(json.dumps({"inputs": [_one(name="X", shape=[3, 2**60])]}).encode(), model="columns"),
        400,
        "'X'",
    ),
    "a dim above int64": (
        _doc(_one(shape=[2**64, 3])),
        400,
        "'shape' must be a list of integers",
    ),  # JSON parsers read it as a float
    "a negative dim": (_doc(_one(shape=[-1, 3])), 400, "expected [-1, 3], got [-1, 3]"),
    "another negative dim": (_doc(_one(shape=[-4, 3])), 400, "got [-4, 3]"),
    "a fractional dim": (_doc(_one(shape=[1.5, 3])), 400, "'shape'"),
    "shape not a list": (_doc(_one(shape=3)), 400, "'shape'"),
    "wrong width": (_doc(_one(shape=[1, 4], data=[1, 2, 3, 4])), 400, "expected [-1, 3], got [1, 4]"),
    "wrong datatype": (_doc(_one(datatype="FP64")), 400, "takes 'FP32'"),
    "unknown datatype": (_doc(_one(datatype="FP33")), 400, "'FP33'"),
    "wrong input name": (_doc(_one(name="z")), 400, "unexpected input 'z'"),
    "two inputs": (_doc(_one(), _one()), 400, "takes 1 input"),
    "no inputs": (_doc(), 400, "takes 1 input 'x', got none"),
    "inputs missing": (_post(b"{}"), 400, "'inputs'"),
    "inputs not a list": (_post(b'{"inputs": {"name": "x"}}'), 400, "'inputs'"),
    "strings as data": (_doc(_one(data=["a", "b", "c"])), 400, "numbers"),
    "a string as data": (_doc(_one(data="0.1,0.2,0.3")), 400, "numbers"),
    "booleans as data": (_doc(_one(data=[True, False, True])), 400, "numbers"),
    "nulls as data": (_doc(_one(data=[None, 0.2, 0.3])), 400, "numbers"),
    "a boolean among numbers": (_doc(_one(data=[0.1, True, 0.3])), 400, "input 'x'"),
    "a boolean among nested numbers": (_doc(_one(data=[[0.1, 0.2, False]])), 400, "input 'x'"),
    "a boolean among FP64 numbers": (
        _post(json.dumps({"inputs": [_one(datatype="FP64", data=[True, 0.2, 0.3])]}).encode(), model="double"),
        400,
        "input 'x'",
    ),
    "an id nested 1,000 deep": (_post(b'{"id": ' + b"[" * 1000 + b"]" * 1000 + b", " + VALID[1:]), 400, "'id'"),
    "an id that is a number": (_doc(_one(), id=7), 400, "'id' must be a string"),
    "binary_data_output a string": (
        _doc(_one(), parameters={"binary_data_output": "false"}),
        400,
        "binary_data_output",
    ),
    "binary_data a string": (
        _doc(_one(), outputs=[{"name": "y", "parameters": {"binary_data": "false"}}]),
        400,
        "binary_data",
    ),
    "no data": (_doc({"name": "x", "shape": [1, 3], "datatype": "FP32"}), 400, "no 'data'"),
    "empty batch": (_doc(_one(shape=[0, 3], data=[])), 400, "empty batch"),
    "batch above max_batch_size": (
        _post(json.dumps({"inputs": [_one(shape=[9, 3], data=[0.0] * 27)]}).encode(), model="small"),
        400,
        "above the max_batch_size 8",
    ),
    "unknown output": (_doc(_one(), outputs=[{"name": "nope"}]), 400, "unknown output 'nope'"),
    "duplicate outputs": (_doc(_one(), outputs=[{"name": "y"}, {"name": "y"}]), 400, "requested twice"),
    "a parameter Triton acts on": (_doc(_one(), parameters={"sequence_id": 1}), 400, "sequence_id"),
    "header length above the body": (_binary(12, 12, lambda n, size: str(size + 1)), 400, "larger than the body"),
    "header length 99999999999": (_binary(12, 12, lambda n, size: "99999999999"), 400, "99999999999"),
    "header length not a number": (_binary(12, 12, lambda n, size: "twelve"), 400, "not a number"),
    "header length negative": (_binary(12, 12, lambda n, size: "-1"), 400, "not a number"),
    "header length a superscript two": (_binary(12, 12, lambda n, size: "\u00b2"), 400, "not a number"),
    "header length of 5,000 digits": (_binary(12, 12, lambda n, size: "9" * 5000), 400, "larger than the body"),
    "header length inside the JSON": (_binary(12, 12, lambda n, size: str(n - 5)), 400, "not valid JSON"),
    "binary_data_size below the bytes": (_binary(8, 12), 400, "binary_data_size"),
    "binary_data_size above the bytes": (_binary(16, 12), 400, "binary_data_size"),
    "binary_data_size not a number": (_binary("12", 12), 400, "binary_data_size"),
    "binary_data_size with JSON data": (_doc(_one(parameters={"binary_data_size": 12})), 400, "binary_data_size"),
    "raw body of two rows": (_post(np.zeros((2, 3), np.float32).tobytes(), {HEADER: "0"}), 400, "got 24"),
    "raw body of half a row": (_post(b"\0" * 6, {HEADER: "0"}), 400, "bytes"),
    "gzip body that is no gzip": (_post(b"not gzip at all", {"Content-Encoding": "gzip"}), 400, "gzip"),
    "gzip body cut short": (_post(gzip.compress(VALID)[:-4], {"Content-Encoding": "gzip"}), 400, "cut short"),
    "deflate body cut short": (_post(zlib.compress(VALID)[:-2], {"Content-Encoding": "deflate"}), 400, "cut short"),
    "gzip body with junk after it": (
        _post(gzip.compress(VALID) + b"junk", {"Content-Encoding": "gzip"}),
        400,
        "4 bytes after the end",
    ),
    "unknown content encoding": (_post(b"{}", {"Content-Encoding": "br"}), 415, "'br'"),
    "unknown version": (_post(VALID, model="versions", version="3"), 404, "version 3"),
    "version not loaded": (_post(VALID, model="latest", version="1"), 404, "version 1"),
    "version 01": (_post(VALID, model="versions", version="01"), 400, "'01'"),
    "version in other digits": (_post(VALID, model="versions", version="%EF%BC%91"), 400, "not a version"),
    "unknown model": (_post(VALID, model="nope"), 404, "unknown model 'nope'"),
    "model that failed to load": (_post(VALID, model="broken"), 503, "not ready"),
    "model name that is a path": (_post(VALID, model="..%2Fevil"), 400, "not a model folder name"),
    "model name ..": (_post(VALID, model="%2E%2E"), 400, "not a model folder name"),
    "model name with a leading dot": (_post(VALID, model=".hidden"), 400, "not a model folder name"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_gets_its_status_and_the_server_keeps_serving(server, repository, case):
    (method, path, body, headers), status, fragment = BAD[case]
    assert_error(call(server, method, path, body, headers), status, fragment)
    assert_still_answers(server, repository)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v2/models/mlp_3_4_1/infer", "POST"),
        ("PUT", "/v2/models/mlp_3_4_1/versions/1/infer", "POST"),
        ("POST", "/v2/health/live", "GET"),
        ("POST", "/v2/health/ready", "GET"),
        ("DELETE", "/v2/models/mlp_3_4_1", "GET"),
        ("POST", "/v2", "GET"),
        ("POST", "/v2/models/mlp_3_4_1/config", "GET"),
        ("GET", "/v2/repository/index", "POST"),
        ("GET", "/v2/repository/models/mlp_3_4_1/load", "POST"),
    ],
)
def test_wrong_method_is_405_with_allow(server, repository, method, path, allowed):
    answer = call(server, method, path)
    assert_error(answer, 405)
    assert allowed in [m.strip() for m in answer.headers.get("Allow", "").split(",")], answer.headers
    assert_still_answers(server, repository)


@pytest.mark.parametrize(
    "path",
    [
        "/static",  # "/" is the page (tests/test_page.py)
        "/v1/models/mlp_3_4_1",
        "/v2/models",
        "/v2/models/mlp_3_4_1/bogus",
        "/v2/health",
        "/v3",
        "/v2/models/mlp_3_4_1/versions",
        "/v2/models/mlp_3_4_1/versions/1/versions/1/infer",
        "/metrics",
    ],
)
def test_unknown_path_is_404(server, repository, path):
    assert_error(call(server, "GET", path), 404)
    assert_error(call(server, "POST", path, b"{}"), 404)
    assert_still_answers(server, repository)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v2/models/nope", 404),
        ("/v2/models/nope/config", 404),
        ("/v2/models/nope/stats", 404),
        ("/v2/models/broken", 503),
        ("/v2/models/broken/config", 503),
        ("/v2/models/versions/versions/3", 404),
        ("/v2/models/versions/versions/01/config", 400),
        ("/v2/models/..%2Fevil", 400),
        ("/v2/models/%ff%fe", 400),  # not UTF-8 once decoded
    ],
)
def test_metadata_of_unknown_and_not_ready_models(server, path, status):
    assert_error(call(server, "GET", path), status)


# Limits: body size, zip bombs, slow clients


def test_a_body_above_the_limit_is_413(limited, repository):
    x = np.zeros((100_000, 3), np.float32)  # 1.2 MB, above 1 MiB
    body, headers = binary_body({"inputs": [binary_input(x)]}, x.tobytes())
    assert_error(call(limited, "POST", infer_path("mlp_3_4_1"), body, headers), 413)
    assert_still_answers(limited, repository)
    X, x = rows(15, 50_000)  # 600 KB: under the limit
    document = {"inputs": [binary_input(x)], "parameters": {"binary_data_output": True}}
    body, headers = binary_body(document, x.tobytes())
    y = decode(call(limited, "POST", infer_path("mlp_3_4_1"), body, headers)).arrays["y"]
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, y.T, "float32")


def test_a_declared_length_above_the_limit_is_refused_before_the_body(limited, repository):
    with socket.create_connection(address(limited), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/mlp_3_4_1/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2147483648\r\n\r\n{"
        )
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert_still_answers(limited, repository)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_zip_bomb_is_413(limited, repository, encoding):
    inflated = b'{"inputs": ' + b" " * (64 << 20) + b"[]}"  # 64 MiB of JSON whitespace
    packed = gzip.compress(inflated, 9) if encoding == "gzip" else zlib.compress(inflated, 9)
    assert len(packed) < (1 << 20)  # the body on the wire is well under the limit
    answer = call(limited, "POST", infer_path("mlp_3_4_1"), packed, {"Content-Encoding": encoding})
    assert_error(answer, 413)
    assert_still_answers(limited, repository)


def test_a_slow_client_holds_only_its_own_connection(limited, repository):
    """On a one-worker server, a client that stops halfway through its headers, and one that stops
    halfway through its body, hold their own connections only: another is answered meanwhile."""
    half_headers = socket.create_connection(address(limited), timeout=10)
    half_body = socket.create_connection(address(limited), timeout=10)
    try:
        half_headers.sendall(b"POST /v2/models/mlp_3_4_1/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        half_body.sendall(
            b'POST /v2/models/mlp_3_4_1/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{"inputs": ['
        )
        time.sleep(0.5)
        start = time.monotonic()
        answers = []
        thread = threading.Thread(target=lambda: answers.append(assert_still_answers(limited, repository)))
        thread.start()
        thread.join(10)
        assert answers == [None] and time.monotonic() - start < 10
    finally:
        half_headers.close()
        half_body.close()
    assert_still_answers(limited, repository)


# A token


def test_a_token_guards_everything_but_live_and_ready(guarded):
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert call(guarded, "GET", path).status == 200
    X, x = rows(16, 2)
    body = json.dumps({"inputs": [tensor(x)]}).encode()
    guarded_calls = [
        ("GET", "/v2", None),
        ("GET", "/v2/models/mlp_3_4_1", None),
        ("GET", "/v2/models/mlp_3_4_1/ready", None),
        ("GET", "/v2/models/mlp_3_4_1/config", None),
        ("GET", "/v2/models/stats", None),
        ("POST", "/v2/repository/index", None),
        ("POST", infer_path("mlp_3_4_1"), body),
    ]
    for method, path, payload in guarded_calls:
        for authorization in (None, "Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN):
            headers = {"Authorization": authorization} if authorization else {}
            answer = call(guarded, method, path, payload, headers)
            assert_error(answer, 401)
            assert answer.headers.get("WWW-Authenticate", "").startswith("Bearer"), answer.headers
        assert call(guarded, method, path, payload, {"Authorization": f"Bearer {TOKEN}"}).status == 200, path
    for scheme in ("bearer", "BEARER", "bEaReR"):  # RFC 7235: the scheme is case-insensitive
        assert call(guarded, "GET", "/v2", None, {"Authorization": f"{scheme} {TOKEN}"}).status == 200, scheme
    answer = call(guarded, "POST", infer_path("mlp_3_4_1"), body, {"Authorization": f"Bearer {TOKEN}"})
    assert_matches_oracle(spec_of(ROOT / "models", "mlp_3_4_1"), X, decode(answer).arrays["y"].T, "float32")
