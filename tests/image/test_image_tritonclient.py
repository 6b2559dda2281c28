"""Every route of the image's V2 API through Triton's own clients, tritonclient.http and
tritonclient.grpc: server metadata, live and ready, model metadata and readiness, the model
configuration, statistics of one model and of all, the repository index, and inference (JSON and
the binary tensor extension over HTTP, raw contents over gRPC) checked against the float64 oracle
with each output's name, datatype and shape. The image installs what `pip install 'forwardpass[cpu]'`
resolves (protobuf 7 among it), so these catch what the test venv's protobuf 6 hides."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import forwardpass

from numerics import assert_matches_oracle, random_input

EXTENSIONS = {"binary_tensor_data", "model_configuration", "model_repository", "statistics"}


@pytest.fixture(scope="module", params=["http", "grpc"])
def triton(request, container):
    """tritonclient's client of one protocol, on the container's port for it."""
    if request.param == "http":
        client = httpclient.InferenceServerClient(f"127.0.0.1:{container.http}")
    else:
        client = grpcclient.InferenceServerClient(container.grpc_address)
    yield client
    client.close()


def ask(client, call: str, *args):
    """A tritonclient call's answer as JSON values. gRPC's comes through protobuf's JSON mapping,
    which writes 64-bit integers as strings and leaves out zeros: `number` reads both."""
    method = getattr(client, call)
    return method(*args, as_json=True) if isinstance(client, grpcclient.InferenceServerClient) else method(*args)


def number(document: dict, *path: str) -> int:
    """The integer at `path`, 0 where the JSON mapping left a zero out."""
    for key in path[:-1]:
        document = document.get(key, {})
    return int(document.get(path[-1], 0))


def tensor_metadata(tensor: dict) -> dict:
    return {"name": tensor["name"], "datatype": tensor["datatype"], "shape": [int(n) for n in tensor["shape"]]}


def infer(client, model: str, X: np.ndarray, binary_in: bool = True, binary_out: bool = True):
    """One inference of the columns X (fed as rows), with the encodings asked for where the
    protocol has a choice (HTTP's JSON or binary tensor extension; gRPC always sends raw bytes)."""
    x = np.ascontiguousarray(X.T)
    if isinstance(client, grpcclient.InferenceServerClient):
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput("y")])
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    return client.infer(model, [tensor], outputs=[httpclient.InferRequestedOutput("y", binary_data=binary_out)])


def test_server_metadata_names_forwardpass_and_its_extensions(triton):
    metadata = ask(triton, "get_server_metadata")
    assert (metadata["name"], metadata["version"]) == ("forwardpass", forwardpass.__version__)
    assert EXTENSIONS <= set(metadata["extensions"])


def test_the_server_is_live_and_ready(triton):
    assert triton.is_server_live() is True and triton.is_server_ready() is True


def test_model_metadata_states_the_committed_tensors(triton, model, committed):
    metadata = ask(triton, "get_model_metadata", model)
    assert (metadata["name"], metadata["versions"], metadata["platform"]) == (model, ["1"], "onnxruntime_onnx")
    inputs, outputs = committed(model).tensors()
    assert [tensor_metadata(t) for t in metadata["inputs"]] == [inputs]
    assert [tensor_metadata(t) for t in metadata["outputs"]] == [outputs]


def test_model_is_ready_and_a_missing_one_is_not(triton, model):
    assert triton.is_model_ready(model) is True and triton.is_model_ready(model, "1") is True
    assert triton.is_model_ready(model, "2") is False
    assert triton.is_model_ready("nope") is False


def test_unknown_model_metadata_is_not_found(triton):
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as info:
        ask(triton, "get_model_metadata", "nope")
    assert info.value.status() in ("404", "StatusCode.NOT_FOUND")


def test_model_config_is_the_committed_config(triton, model, committed):
    answer = ask(triton, "get_model_config", model)
    config = answer["config"] if isinstance(triton, grpcclient.InferenceServerClient) else answer
    expected = committed(model)
    sizes = expected.spec.sizes
    assert (config["name"], config["platform"]) == (model, "onnxruntime_onnx")
    assert int(config["max_batch_size"]) == expected.max_batch_size
    assert [(t["name"], t["data_type"], [int(n) for n in t["dims"]]) for t in config["input"]] == [
        ("x", "TYPE_FP32", [sizes[0]])
    ]
    assert [(t["name"], t["data_type"], [int(n) for n in t["dims"]]) for t in config["output"]] == [
        ("y", "TYPE_FP32", [sizes[-1]])
    ]


def test_model_statistics_count_each_call(triton, model, committed, rng):
    """Three calls of 5 rows: the counters move by exactly that (one worker under --cpus 1)."""

    def stats() -> dict:
        (row,) = ask(triton, "get_inference_statistics", model)["model_stats"]
        assert (row["name"], row["version"]) == (model, "1")
        return row

    before = stats()
    X = random_input(rng, committed(model).spec.sizes[0], 5, "float32")
    for _ in range(3):
        infer(triton, model, X)
    after = stats()
    assert number(after, "inference_count") - number(before, "inference_count") == 15
    assert number(after, "execution_count") - number(before, "execution_count") == 3
    success, fail = ("inference_stats", "success"), ("inference_stats", "fail")
    assert number(after, *success, "count") - number(before, *success, "count") == 3
    assert number(after, *success, "ns") > number(before, *success, "ns")
    assert number(after, *fail, "count") == number(before, *fail, "count")
    assert number(after, "last_inference") >= max(number(before, "last_inference"), 1)


def test_statistics_of_all_models_list_each_version(triton, models):
    rows = ask(triton, "get_inference_statistics")["model_stats"]
    assert sorted((row["name"], row["version"]) for row in rows) == [(model, "1") for model in models]


def test_repository_index_lists_every_model_ready(triton, models):
    answer = ask(triton, "get_model_repository_index")
    rows = answer["models"] if isinstance(triton, grpcclient.InferenceServerClient) else answer
    assert sorted((row["name"], row["version"], row["state"], row.get("reason", "")) for row in rows) == [
        (model, "1", "READY", "") for model in models
    ]


@pytest.mark.parametrize("batch", [1, 64])
def test_inference_over_grpc_matches_the_oracle(container, model, committed, rng, batch):
    spec = committed(model).spec
    X = random_input(rng, spec.sizes[0], batch, "float32")
    with grpcclient.InferenceServerClient(container.grpc_address) as client:
        result = infer(client, model, X)
    response = result.get_response()
    assert (response.model_name, response.model_version) == (model, "1")
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("y", "FP32", [batch, spec.sizes[-1]])
    y = result.as_numpy("y")
    assert y.dtype == np.float32 and y.shape == (batch, spec.sizes[-1])
    assert_matches_oracle(spec, X, y.T, "float32")


@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("batch", [1, 64])
def test_inference_over_http_matches_the_oracle(container, model, committed, rng, batch, binary_in, binary_out):
    """JSON data, or the binary tensor extension's raw bytes after the JSON, each way."""
    spec = committed(model).spec
    X = random_input(rng, spec.sizes[0], batch, "float32")
    client = httpclient.InferenceServerClient(f"127.0.0.1:{container.http}")
    try:
        result = infer(client, model, X, binary_in, binary_out)
    finally:
        client.close()
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == (model, "1")
    (output,) = response["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("y", "FP32", [batch, spec.sizes[-1]])
    if binary_out:
        assert "data" not in output and output["parameters"]["binary_data_size"] == 4 * batch * spec.sizes[-1]
    else:
        assert len(output["data"]) == batch * spec.sizes[-1] and "binary_data_size" not in output.get("parameters", {})
    y = result.as_numpy("y")
    assert y.dtype == np.float32 and y.shape == (batch, spec.sizes[-1])
    assert_matches_oracle(spec, X, y.T, "float32")
