"""Triton's own HTTP client (tritonclient.http) against our HTTP/REST front door: every call it has
for what we serve, binary and JSON tensors both ways, compressed requests, and the oracle's answers.
Runs in its own pytest process with the other tritonclient tests (see tests/conftest.py)."""

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from forwardpass.builder.readback import read_file

from numerics import assert_matches_oracle, random_input

COMMITTED = ("mlp_3_4_1", "mlp_3_4_1_sigmoid")
DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64"}


@pytest.fixture(scope="module")
def client(server):
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=120)
    yield client
    client.close()


def spec_of(repository, name, version=1):
    return read_file(repository / name / str(version) / "model.onnx").spec


def infer(client, model, x, name="x", outputs=None, binary=True, **kwargs):
    """tritonclient's infer; `outputs` as names (binary_data as `binary`) or as InferRequestedOutput."""
    tensor = httpclient.InferInput(name, list(x.shape), DATATYPES[x.dtype])
    tensor.set_data_from_numpy(x, binary_data=binary)
    if outputs is not None:
        outputs = [
            o if not isinstance(o, str) else httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs
        ]
    return client.infer(model, [tensor], outputs=outputs, **kwargs)


def sent_as(result, name):
    """How an output came: 'binary' (bytes after the JSON) or 'json' (a data list)."""
    output = result.get_output(name)
    return "binary" if "binary_data_size" in output.get("parameters", {}) else "json"


def test_health(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp_3_4_1") and client.is_model_ready("versions", "1")
    assert not client.is_model_ready("broken") and not client.is_model_ready("nope")
    assert not client.is_model_ready("latest", "1")  # only the latest version of 'latest' is loaded


def test_server_and_model_metadata(client):
    server = client.get_server_metadata()
    assert server["name"] == "forwardpass" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("mlp_3_4_1")
    assert (meta["name"], meta["versions"], meta["platform"]) == ("mlp_3_4_1", ["1"], "onnxruntime_onnx")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]
    assert client.get_model_metadata("columns")["inputs"][0]["shape"] == [3, -1]
    assert client.get_model_metadata("versions", "1")["versions"] == ["1", "2"]


def test_model_config_statistics_and_index(client):
    config = client.get_model_config("small")
    assert config["max_batch_size"] == 8 and "dynamic_batching" in config
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("x", "TYPE_FP32", [3])]
    assert client.get_model_config("columns")["max_batch_size"] == 0
    infer(client, "small", np.ones((2, 3), np.float32))
    (stats,) = client.get_inference_statistics("small")["model_stats"]
    assert (stats["name"], stats["version"]) == ("small", "1")
    assert type(stats["inference_count"]) is int and type(stats["inference_stats"]["success"]["count"]) is int
    every = client.get_inference_statistics()["model_stats"]
    assert {("versions", "1"), ("versions", "2")} <= {(s["name"], s["version"]) for s in every}
    assert [s["version"] for s in client.get_inference_statistics("versions", "1")["model_stats"]] == ["1"]
    index = {(m["name"], m.get("version", "")): m for m in client.get_model_repository_index()}
    assert index[("mlp_3_4_1", "1")]["state"] == "READY" and index[("broken", "")]["state"] == "UNAVAILABLE"


@pytest.mark.parametrize("batch", [1, 7, 1024, 65536])
@pytest.mark.parametrize("model", COMMITTED)
def test_binary_answers_match_the_oracle(client, repository, model, batch):
    X = random_input(np.random.default_rng(batch), 3, batch, "float32")
    result = infer(client, model, np.ascontiguousarray(X.T), request_id=f"r{batch}")
    assert result.get_response()["id"] == f"r{batch}" and result.get_response()["model_name"] == model
    assert sent_as(result, "y") == "binary"  # tritonclient asks for binary outputs when it names none
    assert_matches_oracle(spec_of(repository, model), X, result.as_numpy("y").T, "float32")


@pytest.mark.parametrize("batch", [1, 7, 1024])
@pytest.mark.parametrize("model", COMMITTED)
def test_json_answers_match_the_oracle(client, repository, model, batch):
    X = random_input(np.random.default_rng(batch), 3, batch, "float32")
    result = infer(client, model, np.ascontiguousarray(X.T), outputs=["y"], binary=False)
    assert sent_as(result, "y") == "json"
    assert_matches_oracle(spec_of(repository, model), X, result.as_numpy("y").T, "float32")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_float64_columns_and_hidden_outputs(client, repository, binary):
    X = random_input(np.random.default_rng(1), 3, 5, "float64")
    result = infer(client, "double", np.ascontiguousarray(X.T), outputs=["y"], binary=binary)
    assert result.get_output("y")["datatype"] == "FP64"
    assert_matches_oracle(spec_of(repository, "double"), X, result.as_numpy("y").T, "float64")
    X32 = X.astype(np.float32)
    columns = infer(client, "columns", X32, name="X", outputs=["Y"], binary=binary)
    assert_matches_oracle(spec_of(repository, "columns"), X32, columns.as_numpy("Y"), "float32")
    hidden = spec_of(repository, "hidden")
    result = infer(client, "hidden", np.ascontiguousarray(X32.T), outputs=["Z2", "A1", "y"], binary=binary)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["Z2", "A1", "y"]
    for name in ("Z2", "A1"):
        assert_matches_oracle(hidden, X32, result.as_numpy(name).T, "float32", layer=name)
    assert_matches_oracle(hidden, X32, result.as_numpy("y").T, "float32")


def test_binary_and_json_outputs_in_one_answer(client, repository):
    X = random_input(np.random.default_rng(2), 3, 4, "float32")
    outputs = [
        httpclient.InferRequestedOutput("Z1", binary_data=True),
        httpclient.InferRequestedOutput("y", binary_data=False),
    ]
    result = infer(client, "hidden", np.ascontiguousarray(X.T), outputs=outputs, binary=False)
    assert (sent_as(result, "Z1"), sent_as(result, "y")) == ("binary", "json")
    hidden = spec_of(repository, "hidden")
    assert_matches_oracle(hidden, X, result.as_numpy("Z1").T, "float32", layer="Z1")
    assert_matches_oracle(hidden, X, result.as_numpy("y").T, "float32")


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compressed_requests(client, repository, compression):
    X = random_input(np.random.default_rng(3), 3, 9, "float32")
    result = infer(
        client,
        "mlp_3_4_1",
        np.ascontiguousarray(X.T),
        request_compression_algorithm=compression,
        response_compression_algorithm=compression,
    )
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, result.as_numpy("y").T, "float32")


def test_model_version(client, repository):
    X = random_input(np.random.default_rng(4), 3, 3, "float32")
    for version in ("1", "2"):
        result = infer(client, "versions", np.ascontiguousarray(X.T), model_version=version)
        assert result.get_response()["model_version"] == version
        assert_matches_oracle(spec_of(repository, "versions", version), X, result.as_numpy("y").T, "float32")


def test_nan_in_is_nan_out_in_json_and_binary(client):
    x = np.array([[np.nan, 0.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
    for binary in (True, False):
        y = infer(client, "mlp_3_4_1_sigmoid", x, outputs=["y"], binary=binary).as_numpy("y")
        assert np.isnan(y[0, 0]) and np.isfinite(y[1, 0]), binary


@pytest.mark.parametrize(
    ("model", "x", "kwargs", "status", "message"),
    [
        ("nope", np.ones((1, 3), np.float32), {}, "404", "unknown model 'nope'"),
        ("versions", np.ones((1, 3), np.float32), {"model_version": "3"}, "404", "no loaded version 3"),
        ("versions", np.ones((1, 3), np.float32), {"model_version": "01"}, "400", "'01'"),
        ("mlp_3_4_1", np.ones((1, 4), np.float32), {}, "400", "expected [-1, 3], got [1, 4]"),
        ("mlp_3_4_1", np.ones((1, 3), np.float64), {}, "400", "takes 'FP32'"),
        ("small", np.ones((9, 3), np.float32), {}, "400", "above the max_batch_size 8"),
        ("mlp_3_4_1", np.ones((1, 3), np.float32), {"outputs": ["nope"]}, "400", "unknown output 'nope'"),
        ("mlp_3_4_1", np.ones((1, 3), np.float32), {"outputs": ["y", "y"]}, "400", "requested twice"),
        ("broken", np.ones((1, 3), np.float32), {}, "503", "model 'broken' is not ready"),
    ],
)
def test_errors_reach_tritonclient_with_status_and_message(client, repository, model, x, kwargs, status, message):
    for binary in (True, False):
        with pytest.raises(InferenceServerException) as info:
            infer(client, model, x, binary=binary, **kwargs)
        assert info.value.status() == status and message in info.value.message(), (binary, info.value)
    X = random_input(np.random.default_rng(5), 3, 2, "float32")
    y = infer(client, "mlp_3_4_1", np.ascontiguousarray(X.T)).as_numpy("y")
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, y.T, "float32")


def test_errors_of_the_other_calls(client):
    calls = [
        (lambda: client.get_model_metadata("nope"), "404"),
        (lambda: client.get_model_config("broken"), "503"),
        (lambda: client.get_inference_statistics("nope"), "404"),
        (lambda: client.load_model("mlp_3_4_1"), "501"),
        (lambda: client.unload_model("mlp_3_4_1"), "501"),
    ]
    for function, status in calls:
        with pytest.raises(InferenceServerException) as info:
            function()
        assert info.value.status() == status and info.value.message(), info.value
