"""Fuzzing a live server: random ModelInfer requests and random bytes, every answer a proper status.

Every message that parses gets an answer or INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED (or
UNAVAILABLE for the model that failed to load), never UNKNOWN or INTERNAL; bytes that are no
ModelInferRequest at all may get grpcio's own INTERNAL before our code runs. No worker crashes or
hangs, and a valid request after each batch still gets the oracle's answer.
"""

import json
import os

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwardpass.builder.readback import read_file
from forwardpass.protos import grpc_service_pb2 as pb

from helpers import assert_matches_oracle, random_input

METHOD = "/inference.GRPCInferenceService/ModelInfer"
PARSED_OK = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}
TRIED = {"structured": 0, "bytes": 0}
EXAMPLES = int(os.environ.get("FORWARDPASS_FUZZ_EXAMPLES", "300"))  # the soak raises it; CI keeps it short

names = st.sampled_from(["mlp_3_4_1", "mlp_3_4_1_sigmoid", "columns", "double", "small", "broken", "hidden"]) | st.text(
    max_size=12
)
dims = st.integers(0, 9) | st.sampled_from([-1, -(2**40), 2**31, 2**62, 65536 * 20])
datatypes = st.sampled_from(["FP32", "FP64", "INT32", "BYTES", "BF16", ""]) | st.text(max_size=5)
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def requests(draw):
    request = pb.ModelInferRequest(
        model_name=draw(names),
        model_version=draw(st.sampled_from(["", "1", "2", "0", "-1", "x"])),
        id=draw(st.text(max_size=8)),
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 2))):
        tensor = request.inputs.add(
            name=draw(st.sampled_from(["x", "X", "y"]) | st.text(max_size=4)),
            datatype=draw(datatypes),
            shape=draw(st.lists(dims, max_size=4)),
        )
        if raw or draw(st.booleans()):
            request.raw_input_contents.append(draw(st.binary(max_size=96)))
        if not raw:
            field = draw(st.sampled_from(["fp32_contents", "fp64_contents", "int_contents", "bool_contents"]))
            values = draw(st.lists(floats if field.startswith("fp") else st.integers(0, 1), max_size=24))
            getattr(tensor.contents, field).extend(values)
    for name in draw(st.lists(st.sampled_from(["y", "Y", "Z1", "A1", "nope"]), max_size=3)):
        request.outputs.add(name=name)
    return request


@pytest.fixture(scope="module")
def call(server):
    limits = [("grpc.max_send_message_length", 64 * 2**20), ("grpc.max_receive_message_length", 64 * 2**20)]
    with grpc.insecure_channel(server.url, options=limits) as channel:
        yield channel.unary_unary(METHOD)


def status(call, data: bytes) -> str:
    try:
        call(data, timeout=30)
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name


def still_answers(call, repository):
    spec = read_file(repository / "mlp_3_4_1" / "1" / "model.onnx").spec
    X = random_input(np.random.default_rng(0), 3, 4, "float32")
    request = pb.ModelInferRequest(model_name="mlp_3_4_1")
    request.inputs.add(name="x", datatype="FP32", shape=[4, 3])
    request.raw_input_contents.append(np.ascontiguousarray(X.T).tobytes())
    response = pb.ModelInferResponse.FromString(call(request.SerializeToString(), timeout=30))
    assert_matches_oracle(
        spec, X, np.frombuffer(response.raw_output_contents[0], np.float32).reshape(4, 1).T, "float32"
    )


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests())
def test_structured_requests_get_a_proper_status(call, request):
    TRIED["structured"] += 1
    code = status(call, request.SerializeToString())
    assert code in PARSED_OK, f"{code} for {request}"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_random_bytes_get_a_proper_status(call, data):
    TRIED["bytes"] += 1
    try:
        pb.ModelInferRequest.FromString(data)
        parses = True
    except Exception:  # protobuf's DecodeError: grpcio's deserializer fails the same way
        parses = False
    code = status(call, data)
    assert code in (PARSED_OK if parses else PARSED_OK | {"INTERNAL"}), f"{code} for {data!r}"


def test_the_server_still_answers_and_no_worker_died(call, repository, server, tmp_path_factory):
    still_answers(call, repository)
    assert "died" not in server.output()
    report = tmp_path_factory.getbasetemp() / "fuzz-tried.json"
    report.write_text(json.dumps(TRIED))
    print(f"fuzz requests tried: {TRIED}")
