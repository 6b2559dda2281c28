"""KServe's own Python SDK client (kserve.InferenceGRPCClient, on grpc.aio) against our server: its
health calls, numpy data sent raw with the per-input parameter `binary_data_size`, Python lists sent
as typed contents, and the oracle's answers. A `binary_data_size` that is not the raw byte count is
refused by name. Runs in its own pytest process (see tests/conftest.py)."""

import asyncio

import grpc
import kserve
import numpy as np
import pytest

from forwardpass.builder.readback import read_file

from numerics import assert_matches_oracle, random_input

# model -> (V2 datatype, numpy dtype and tolerance mode): the committed FP32 model and the float64 one
MODELS = {"mlp_3_4_1": ("FP32", "float32"), "double": ("FP64", "float64")}


def with_client(server, work):
    """`await work(client)` on a fresh client: a grpc.aio channel belongs to the event loop that made it."""

    async def main():
        async with kserve.InferenceGRPCClient(server.url, timeout=30) as client:
            return await work(client)

    return asyncio.run(main())


def binary_request(model: str, x: np.ndarray, request_id: str = "") -> kserve.InferRequest:
    tensor = kserve.InferInput("x", list(x.shape), MODELS[model][0])
    tensor.set_data_from_numpy(x, binary_data=True)
    return kserve.InferRequest(model_name=model, infer_inputs=[tensor], request_id=request_id)


def typed_request(model: str, x: np.ndarray, request_id: str = "") -> kserve.InferRequest:
    tensor = kserve.InferInput("x", list(x.shape), MODELS[model][0], data=x.flatten().tolist())
    return kserve.InferRequest(model_name=model, infer_inputs=[tensor], request_id=request_id)


def rejection(server, request: kserve.InferRequest) -> grpc.aio.AioRpcError:
    """The error the server answers `request` with (the test fails if it answers)."""

    async def work(client):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.infer(request)
        return info.value

    return with_client(server, work)


def test_health_calls(server):
    async def work(client):
        ready = {}
        for name in ("mlp_3_4_1", "double", "broken", "nope"):
            try:
                ready[name] = await client.is_model_ready(name)
            except grpc.aio.AioRpcError as exc:
                ready[name] = exc.code()
        return await client.is_server_live(), await client.is_server_ready(), ready

    live, ready, models = with_client(server, work)
    assert live is True and ready is True
    assert models["mlp_3_4_1"] is True and models["double"] is True
    assert models["broken"] is False  # in the repository, failed to load
    assert models["nope"] in (False, grpc.StatusCode.NOT_FOUND)  # not in the repository


@pytest.mark.parametrize("encoding", ["binary", "typed"])
@pytest.mark.parametrize("batch", [1, 7, 1000])
@pytest.mark.parametrize("model", MODELS)
def test_answers_match_the_oracle(server, repository, model, batch, encoding):
    datatype, mode = MODELS[model]
    spec = read_file(repository / model / "1" / "model.onnx").spec
    X = random_input(np.random.default_rng(batch), 3, batch, mode)
    x = np.ascontiguousarray(X.T)  # the served input is rows: [-1, 3]
    request = (binary_request if encoding == "binary" else typed_request)(model, x, request_id=f"{encoding}-{batch}")

    sent = request.to_grpc()  # what the SDK puts on the wire: the encoding under test
    if encoding == "binary":
        assert list(sent.raw_input_contents) == [x.tobytes()]
        assert sent.inputs[0].parameters["binary_data_size"].int64_param == x.nbytes
    else:
        assert not sent.raw_input_contents and "binary_data_size" not in sent.inputs[0].parameters
        contents = (
            sent.inputs[0].contents.fp32_contents if datatype == "FP32" else sent.inputs[0].contents.fp64_contents
        )
        assert np.array_equal(np.array(contents, x.dtype), x.ravel())

    response = with_client(server, lambda client: client.infer(request))
    assert response.model_name == model and response.id == f"{encoding}-{batch}"
    y = response.get_output_by_name("y")
    assert y.datatype == datatype and y.shape == [batch, 1]
    assert_matches_oracle(spec, X, y.as_numpy().T, mode)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("off_by", [-4, 4, "zero"])
def test_a_binary_data_size_that_is_not_the_raw_byte_count_is_refused(server, model, off_by):
    x = np.ones((2, 3), MODELS[model][1])
    request = binary_request(model, x)
    # The SDK sets the parameter to the byte count; say something else about the same bytes.
    size = 0 if off_by == "zero" else x.nbytes + off_by
    request.inputs[0].parameters["binary_data_size"] = size
    sent = request.to_grpc()
    assert sent.inputs[0].parameters["binary_data_size"].int64_param == size
    assert list(sent.raw_input_contents) == [x.tobytes()]

    error = rejection(server, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert "binary_data_size" in error.details()
    # and the same bytes with the count the SDK wrote are answered
    response = with_client(server, lambda client: client.infer(binary_request(model, x)))
    assert response.get_output_by_name("y").as_numpy().shape == (2, 1)
