"""The image through KServe's own SDK (kserve 0.21): its REST client kserve.InferenceRESTClient and its
gRPC client kserve.InferenceGRPCClient for health, readiness and inference (JSON and the binary
tensor extension over REST, typed contents and raw bytes over gRPC) against the float64 oracle, and the
metadata calls the SDK defines no method for read through the SDK's own V2 types: its REST data
models (pydantic) and its gRPC stub. Model configuration, statistics and the repository index are
Triton's extensions, outside KServe's protocol and SDK: test_image_tritonclient.py checks them.
kserve defines the protobuf package `inference`: this runs in a pytest process of its own
(FORWARDPASS_KSERVE_TESTS=1, see conftest.py)."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import kserve
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.infer_type import RequestedOutput
from kserve.protocol.rest import v2_datamodels

import forwardpass

from numerics import assert_matches_oracle, random_input


def rest(work):
    """`await work(client)` on a fresh REST client: an httpx.AsyncClient belongs to the loop that made it."""

    async def main():
        async with kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=60)) as client:
            return await work(client)

    return asyncio.run(main())


def grpc_call(container, work):
    """`await work(client)` on a fresh gRPC client: a grpc.aio channel belongs to the loop that made it."""

    async def main():
        async with kserve.InferenceGRPCClient(container.grpc_address, timeout=30) as client:
            return await work(client)

    return asyncio.run(main())


def stub_call(container, method: str, request):
    """One call through the SDK's own V2 gRPC stub, for the calls its client has no method for."""

    async def main():
        async with grpc.aio.insecure_channel(container.grpc_address) as channel:
            return await getattr(GRPCInferenceServiceStub(channel), method)(request, timeout=30)

    return asyncio.run(main())


def get_json(container, path: str) -> bytes:
    """A GET on the image's HTTP port with httpx (the SDK's HTTP library), its body when it is 200 JSON."""
    response = httpx.get(f"{container.http_url}{path}", timeout=30)
    assert response.status_code == 200, (path, response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    return response.content


def request(model: str, X: np.ndarray, binary_in: bool, binary_out: bool | None = None) -> kserve.InferRequest:
    """The columns X fed as rows, as data in the JSON or as binary after it."""
    x = np.ascontiguousarray(X.T)
    tensor = kserve.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    outputs = None if binary_out is None else [RequestedOutput("y", {"binary_data": binary_out})]
    return kserve.InferRequest(model, [tensor], request_id=f"image-{X.shape[1]}", request_outputs=outputs)


def assert_answer(response: kserve.InferResponse, model: str, spec, X: np.ndarray) -> None:
    """The SDK's decoded answer: its model, id, the output's name, datatype and shape, and the oracle."""
    assert response.model_name == model and response.id == f"image-{X.shape[1]}"
    (y,) = response.outputs
    assert (y.name, y.datatype, list(y.shape)) == ("y", "FP32", [X.shape[1], spec.sizes[-1]])
    values = y.as_numpy()
    assert values.dtype == np.float32 and values.shape == (X.shape[1], spec.sizes[-1])
    assert_matches_oracle(spec, X, values.T, "float32")


# REST: kserve.InferenceRESTClient


def test_rest_health_and_model_readiness(container, model):
    url = container.http_url

    async def work(client):
        return (
            await client.is_server_live(url),
            await client.is_server_ready(url),
            await client.is_model_ready(url, model),
            await client.is_model_ready(url, "nope"),
        )

    assert rest(work) == (True, True, True, False)


def test_rest_server_metadata_reads_as_kserves_type(container):
    metadata = v2_datamodels.ServerMetadataResponse.model_validate_json(get_json(container, "/v2"))
    assert (metadata.name, metadata.version) == ("forwardpass", forwardpass.__version__)
    assert "binary_tensor_data" in metadata.extensions


def test_rest_model_metadata_reads_as_kserves_type(container, model, committed):
    for path in (f"/v2/models/{model}", f"/v2/models/{model}/versions/1"):
        metadata = v2_datamodels.ModelMetadataResponse.model_validate_json(get_json(container, path))
        assert (metadata.name, metadata.versions, metadata.platform) == (model, ["1"], "onnxruntime_onnx")
        inputs, outputs = committed(model).tensors()
        assert [t.model_dump() for t in metadata.inputs] == [inputs]
        assert [t.model_dump() for t in metadata.outputs] == [outputs]
        ready = v2_datamodels.ModelReadyResponse.model_validate_json(get_json(container, f"{path}/ready"))
        assert (ready.name, ready.ready) == (model, True)


@pytest.mark.parametrize("binary_out", [None, False, True], ids=["default-out", "json-out", "binary-out"])
@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("batch", [1, 64])
def test_rest_inference_matches_the_oracle(container, model, committed, rng, batch, binary_in, binary_out):
    """JSON data or the binary tensor extension in; out as the server picks (JSON) or as asked."""
    spec = committed(model).spec
    X = random_input(rng, spec.sizes[0], batch, "float32")
    req = request(model, X, binary_in, binary_out)
    _, json_length = req.to_rest()  # what the SDK puts on the wire: the encoding under test
    assert (json_length is not None) == binary_in
    headers: dict[str, str] = {}
    response = rest(lambda client: client.infer(container.http_url, req, model_name=model, response_headers=headers))
    if binary_out:
        assert headers["content-type"] == "application/octet-stream"
        assert int(headers["inference-header-content-length"]) > 0
    else:
        assert headers["content-type"] == "application/json"
    assert_answer(response, model, spec, X)


# gRPC: kserve.InferenceGRPCClient


def test_grpc_health_and_model_readiness(container, model):
    async def work(client):
        return (
            await client.is_server_live(),
            await client.is_server_ready(),
            await client.is_model_ready(model),
            await client.is_model_ready("nope"),
        )

    assert grpc_call(container, work) == (True, True, True, False)


def test_grpc_server_metadata_through_kserves_stub(container):
    metadata = stub_call(container, "ServerMetadata", pb.ServerMetadataRequest())
    assert (metadata.name, metadata.version) == ("forwardpass", forwardpass.__version__)
    assert "binary_tensor_data" in metadata.extensions


def test_grpc_model_metadata_through_kserves_stub(container, model, committed):
    for version in ("", "1"):
        metadata = stub_call(container, "ModelMetadata", pb.ModelMetadataRequest(name=model, version=version))
        assert (metadata.name, list(metadata.versions), metadata.platform) == (model, ["1"], "onnxruntime_onnx")
        inputs, outputs = committed(model).tensors()
        tensors = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in metadata.inputs]
        assert tensors == [inputs]
        tensors = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in metadata.outputs]
        assert tensors == [outputs]


def test_grpc_unknown_model_is_not_found(container):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        stub_call(container, "ModelMetadata", pb.ModelMetadataRequest(name="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "unknown model 'nope'" in info.value.details()


@pytest.mark.parametrize("binary_in", [False, True], ids=["typed-contents", "raw-contents"])
@pytest.mark.parametrize("batch", [1, 64])
def test_grpc_inference_matches_the_oracle(container, model, committed, rng, batch, binary_in):
    spec = committed(model).spec
    X = random_input(rng, spec.sizes[0], batch, "float32")
    req = request(model, X, binary_in)
    sent = req.to_grpc()  # what the SDK puts on the wire: the encoding under test
    assert bool(sent.raw_input_contents) == binary_in and bool(sent.inputs[0].contents.fp32_contents) != binary_in
    assert_answer(grpc_call(container, lambda client: client.infer(req)), model, spec, X)
