"""Triton's own Python client against our server: every RPC it has for what we serve, and the
oracle's answers. Runs in its own pytest process (see tests/conftest.py)."""

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from forwardpass.builder.readback import read_file

from numerics import assert_matches_oracle, random_input

COMMITTED = ("mlp_3_4_1", "mlp_3_4_1_sigmoid")


@pytest.fixture(scope="module")
def client(server):
    client = tc.InferenceServerClient(server.url)
    yield client
    client.close()


def infer(client, model, x, name="x", outputs=None, **kwargs):
    tensor = tc.InferInput(name, list(x.shape), "FP64" if x.dtype == np.float64 else "FP32")
    tensor.set_data_from_numpy(x)
    requested = [tc.InferRequestedOutput(o) for o in outputs] if outputs else None
    return client.infer(model, [tensor], outputs=requested, **kwargs)


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp_3_4_1") and not client.is_model_ready("broken")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "forwardpass" and "statistics" in server["extensions"]
    meta = client.get_model_metadata("mlp_3_4_1", as_json=True)
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "3"]}]


def test_model_config_statistics_and_index(client):
    config = client.get_model_config("small", as_json=True)["config"]
    assert config["max_batch_size"] == 8 and "dynamic_batching" in config
    infer(client, "small", np.ones((2, 3), np.float32))
    stats = client.get_inference_statistics("small", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) >= 2 and int(stats["inference_stats"]["success"]["count"]) >= 1
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index["mlp_3_4_1"]["state"] == "READY" and index["broken"]["state"] == "UNAVAILABLE"


@pytest.mark.parametrize("batch", [1, 7, 1024, 65536])
@pytest.mark.parametrize("model", COMMITTED)
def test_answers_match_the_oracle(client, repository, model, batch):
    spec = read_file(repository / model / "1" / "model.onnx").spec
    X = random_input(np.random.default_rng(batch), 3, batch, "float32")
    result = infer(client, model, np.ascontiguousarray(X.T), request_id=f"r{batch}")
    assert result.get_response().id == f"r{batch}"
    assert_matches_oracle(spec, X, result.as_numpy("y").T, "float32")


def test_float64_columns_and_hidden_outputs(client, repository):
    X = random_input(np.random.default_rng(1), 3, 5, "float64")
    double = read_file(repository / "double" / "1" / "model.onnx").spec
    assert_matches_oracle(double, X, infer(client, "double", np.ascontiguousarray(X.T)).as_numpy("y").T, "float64")
    X32 = X.astype(np.float32)
    columns = read_file(repository / "columns" / "1" / "model.onnx").spec
    assert_matches_oracle(columns, X32, infer(client, "columns", X32, name="X").as_numpy("Y"), "float32")
    hidden = read_file(repository / "hidden" / "1" / "model.onnx").spec
    result = infer(client, "hidden", np.ascontiguousarray(X32.T), outputs=["Z2", "y"])
    assert_matches_oracle(hidden, X32, result.as_numpy("Z2").T, "float32", layer="Z2")


@pytest.mark.parametrize(
    ("model", "x", "status", "message"),
    [
        ("nope", np.ones((1, 3), np.float32), "StatusCode.NOT_FOUND", "unknown model 'nope'"),
        ("mlp_3_4_1", np.ones((1, 4), np.float32), "StatusCode.INVALID_ARGUMENT", "expected [-1, 3], got [1, 4]"),
        ("mlp_3_4_1", np.ones((1, 3), np.float64), "StatusCode.INVALID_ARGUMENT", "takes 'FP32'"),
        ("small", np.ones((9, 3), np.float32), "StatusCode.INVALID_ARGUMENT", "above the max_batch_size 8"),
        ("broken", np.ones((1, 3), np.float32), "StatusCode.UNAVAILABLE", "model 'broken' is not ready"),
    ],
)
def test_errors_reach_tritonclient_with_status_and_message(client, repository, model, x, status, message):
    with pytest.raises(InferenceServerException) as info:
        infer(client, model, x)
    assert info.value.status() == status and message in info.value.message()
    assert infer(client, "mlp_3_4_1", np.zeros((1, 3), np.float32)).as_numpy("y").shape == (1, 1)
