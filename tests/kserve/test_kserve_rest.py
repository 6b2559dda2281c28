"""KServe's own Python SDK REST client (kserve.InferenceRESTClient, V2 protocol, on httpx) against our
HTTP/REST front door: its health calls, numpy data sent as binary after the JSON or as JSON lists,
binary outputs asked for by name, errors with our message, and the oracle's answers. Runs in its
own pytest process with the other kserve tests (see tests/conftest.py)."""

import asyncio

import httpx
import kserve
import numpy as np
import pytest
from kserve.protocol.infer_type import RequestedOutput

from forwardpass.builder.readback import read_file

from numerics import assert_matches_oracle, random_input

# model -> (V2 datatype, numpy dtype and tolerance mode): the committed FP32 model and the float64 one
MODELS = {"mlp_3_4_1": ("FP32", "float32"), "double": ("FP64", "float64")}


def with_client(work):
    """`await work(client)` on a fresh client: an httpx.AsyncClient belongs to the event loop that made it."""

    async def main():
        async with kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=60)) as client:
            return await work(client)

    return asyncio.run(main())


def request(model: str, x: np.ndarray, binary: bool, name: str = "x", outputs=None, request_id: str = ""):
    datatype = "FP64" if x.dtype == np.float64 else "FP32"
    tensor = kserve.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return kserve.InferRequest(model, [tensor], request_id=request_id or None, request_outputs=outputs)


def infer(server, model: str, req: kserve.InferRequest, **kwargs) -> kserve.InferResponse:
    return with_client(lambda client: client.infer(server.http_url, req, model_name=model, **kwargs))


def spec_of(repository, name):
    return read_file(repository / name / "1" / "model.onnx").spec


def test_health_calls(server):
    async def work(client):
        ready = {
            name: await client.is_model_ready(server.http_url, name)
            for name in ("mlp_3_4_1", "double", "broken", "nope")
        }
        return await client.is_server_live(server.http_url), await client.is_server_ready(server.http_url), ready

    live, ready, models = with_client(work)
    assert live is True and ready is True  # read from the bodies {"live": true} and {"ready": true}
    assert models == {"mlp_3_4_1": True, "double": True, "broken": False, "nope": False}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("batch", [1, 7, 1000])
@pytest.mark.parametrize("model", MODELS)
def test_answers_match_the_oracle(server, repository, model, batch, binary):
    datatype, mode = MODELS[model]
    X = random_input(np.random.default_rng(batch), 3, batch, mode)
    x = np.ascontiguousarray(X.T)
    req = request(model, x, binary, request_id=f"{model}-{batch}")
    body, json_length = req.to_rest()  # what the SDK puts on the wire: the encoding under test
    assert (json_length is not None) == binary
    headers = {}
    response = infer(server, model, req, response_headers=headers)
    assert headers["content-type"] == "application/json"  # no binary output was asked for
    assert response.model_name == model and response.id == f"{model}-{batch}"
    y = response.outputs[0]
    assert (y.name, y.datatype, y.shape) == ("y", datatype, [batch, 1])
    assert_matches_oracle(spec_of(repository, model), X, y.as_numpy().T, mode)


def test_binary_outputs_asked_for_by_name(server, repository):
    X = random_input(np.random.default_rng(3), 3, 6, "float32")
    outputs = [RequestedOutput("Z2", {"binary_data": True}), RequestedOutput("y", {"binary_data": False})]
    headers = {}
    response = infer(
        server, "hidden", request("hidden", np.ascontiguousarray(X.T), True, outputs=outputs), response_headers=headers
    )
    assert headers["content-type"] == "application/octet-stream" and "inference-header-content-length" in headers
    assert [o.name for o in response.outputs] == ["Z2", "y"]
    hidden = spec_of(repository, "hidden")
    assert_matches_oracle(hidden, X, response.outputs[0].as_numpy().T, "float32", layer="Z2")
    assert_matches_oracle(hidden, X, response.outputs[1].as_numpy().T, "float32")


def test_columns_model(server, repository):
    X = random_input(np.random.default_rng(4), 3, 5, "float32")
    response = infer(server, "columns", request("columns", X, True, name="X"))
    assert response.outputs[0].name == "Y"
    assert_matches_oracle(spec_of(repository, "columns"), X, response.outputs[0].as_numpy(), "float32")


@pytest.mark.parametrize(
    ("model", "x", "status", "message"),
    [
        ("nope", np.ones((1, 3), np.float32), 404, "unknown model 'nope'"),
        ("mlp_3_4_1", np.ones((1, 4), np.float32), 400, "expected [-1, 3], got [1, 4]"),
        ("mlp_3_4_1", np.ones((1, 3), np.float64), 400, "takes 'FP32'"),
        ("broken", np.ones((1, 3), np.float32), 503, "model 'broken' is not ready"),
    ],
)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_errors_reach_the_sdk_with_status_and_message(server, repository, model, x, status, message, binary):
    with pytest.raises(httpx.HTTPStatusError) as info:
        infer(server, model, request(model, x, binary))
    # the SDK puts the server's message into its own only when the error is exactly application/json
    assert info.value.response.status_code == status and message in str(info.value), str(info.value)
    X = random_input(np.random.default_rng(5), 3, 2, "float32")
    response = infer(server, "mlp_3_4_1", request("mlp_3_4_1", np.ascontiguousarray(X.T), binary))
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, response.outputs[0].as_numpy().T, "float32")
