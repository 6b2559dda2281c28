"""The data plane on its own: no server, no transport; plain requests in, plain answers out.

What a request means (lookup, names and versions, checking it once, parameters, deadlines,
statistics) is tested here once for every front door.
"""

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from forwardpass.builder.readback import read_file
from forwardpass.errors import ForwardpassError, Kind
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.server import codec
from forwardpass.server.dataplane import DataPlane
from forwardpass.server.errors import parsing
from forwardpass.server.inference import InferInput, InferRequest, InferResponse, OutputTensor, RequestedOutput
from forwardpass.server.repository import Repository
from forwardpass.server.servicer import InferenceServicer

from harness import served_repository
from numerics import assert_matches_oracle, random_input

# Spellings that are no version ("²" and "１" pass str.isdigit but are not ASCII; "01" is version 1 in
# another spelling) and names that are paths, or could be files beside the model folders.
NOT_VERSIONS = ["²", "01", "１", "0", "-1", "1.0", " 1", "1 ", "٣", "99999999999999999999"]
NOT_NAMES = ["../evil", "/etc", "/nonexistent", "mlp_3_4_1/../../evil", "./mlp_3_4_1", "mlp_3_4_1/", ".", "..",
             ".hidden", "a\\b", "nul\0"]  # fmt: skip


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    return served_repository(tmp_path_factory.mktemp("plane"))


@pytest.fixture(scope="module")
def plane(repository):
    models = Repository(repository, provider="cpu", threads=1, skip_bad=True)
    models.load()
    plane = DataPlane(models)
    plane.loaded = True
    return plane


def request(x: np.ndarray, model="mlp_3_4_1", version="", raw=True, **fields) -> InferRequest:
    datatype = "FP64" if x.dtype == np.float64 else "FP32"
    data = x.tobytes() if raw else x.reshape(-1).tolist()
    parameters = fields.pop("input_parameters", {})
    tensor = InferInput("x", datatype, x.shape, data, parameters)
    return InferRequest(model, version, (tensor,), **fields)


def refused(call, kind=Kind.BAD_INPUT, match=None):
    with pytest.raises(ForwardpassError, match=match) as info:
        call()
    assert info.value.kind is kind, info.value
    return str(info.value)


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_an_answer_matches_the_oracle(plane, repository, raw):
    spec = read_file(repository / "mlp_3_4_1" / "1" / "model.onnx").spec
    X = random_input(np.random.default_rng(0), 3, 5, "float32")
    answer = plane.infer(request(np.ascontiguousarray(X.T), raw=raw, id="r1"))
    (y,) = answer.outputs
    assert (answer.model, answer.version, answer.id, y.name, y.datatype) == ("mlp_3_4_1", "1", "r1", "y", "FP32")
    assert y.array.dtype == np.dtype("<f4") and y.array.flags.c_contiguous
    assert_matches_oracle(spec, X, y.array.T, "float32")


def test_requested_hidden_outputs_come_in_the_order_asked(plane):
    x = np.ones((2, 3), np.float32)
    outputs = (RequestedOutput("A2"), RequestedOutput("Z1"))
    answer = plane.infer(request(x, model="hidden", outputs=outputs))
    assert [(o.name, o.shape) for o in answer.outputs] == [("A2", (2, 4)), ("Z1", (2, 5))]


@pytest.mark.parametrize("version", NOT_VERSIONS)
def test_a_version_has_one_spelling_in_every_call(plane, version):
    x = np.ones((1, 3), np.float32)
    for call in (
        lambda: plane.infer(request(x, version=version)),
        lambda: plane.model_metadata("mlp_3_4_1", version),
        lambda: plane.model_config("mlp_3_4_1", version),
        lambda: plane.model_statistics("mlp_3_4_1", version),
        lambda: plane.model_ready("mlp_3_4_1", version),
    ):
        assert "is not a version" in refused(call)
    assert plane.model_ready("mlp_3_4_1", "1") and not plane.model_ready("mlp_3_4_1", "2")


@pytest.mark.parametrize("name", NOT_NAMES)
def test_a_model_name_that_is_a_path_is_invalid_everywhere(plane, name):
    x = np.ones((1, 3), np.float32)
    for call in (
        lambda: plane.infer(request(x, model=name)),
        lambda: plane.model_metadata(name),
        lambda: plane.model_ready(name),
        lambda: plane.model_statistics(name),
    ):
        assert "not a model folder name" in refused(call)


def test_unknown_models_and_versions_are_not_found(plane):
    x = np.ones((1, 3), np.float32)
    assert "unknown model 'nope'" in refused(lambda: plane.infer(request(x, model="nope")), Kind.NOT_FOUND)
    assert "no loaded version 7" in refused(lambda: plane.infer(request(x, version="7")), Kind.NOT_FOUND)
    assert not plane.model_ready("nope")


def test_a_model_that_failed_to_load_is_unavailable(plane):
    refused(lambda: plane.infer(request(np.ones((1, 3), np.float32), model="broken")), Kind.UNAVAILABLE)
    assert not plane.model_ready("broken")
    assert ("broken", "UNAVAILABLE") in [(r.name, r.state) for r in plane.repository_index()]
    assert "broken" not in [r.name for r in plane.repository_index(ready_only=True)]


def test_nothing_is_served_before_the_models_load(repository):
    plane = DataPlane(Repository(repository, provider="cpu"))
    assert plane.live() and not plane.ready()
    refused(lambda: plane.infer(request(np.ones((1, 3), np.float32))), Kind.UNAVAILABLE, "loading models")


@pytest.mark.parametrize(
    "where, key",
    [("request", "sequence_id"), ("request", "sequence_start"), ("input", "shared_memory_region"),
     ("input", "shared_memory_byte_size"), ("output", "classification"), ("output", "shared_memory_offset")],
)  # fmt: skip
def test_parameters_triton_acts_on_and_we_do_not_are_refused_by_name(plane, where, key):
    x = np.ones((1, 3), np.float32)
    fields = {
        "request": {"parameters": {key: 1}},
        "input": {"input_parameters": {key: 1}},
        "output": {"outputs": (RequestedOutput("y", {key: 1}),)},
    }[where]
    assert f"parameter '{key}'" in refused(lambda: plane.infer(request(x, **fields)))


def test_other_parameters_pass_and_priority_is_accepted(plane):
    x = np.ones((1, 3), np.float32)
    assert plane.infer(request(x, parameters={"priority": 1, "my_tag": "a", "headers": "x"})).outputs


def test_binary_data_size_must_equal_the_raw_byte_count(plane):
    x = np.ones((2, 3), np.float32)
    assert plane.infer(request(x, input_parameters={"binary_data_size": 24})).outputs
    assert "says 23 bytes, the raw data has 24" in refused(
        lambda: plane.infer(request(x, input_parameters={"binary_data_size": 23}))
    )
    assert "not raw bytes" in refused(
        lambda: plane.infer(request(x, raw=False, input_parameters={"binary_data_size": 24}))
    )


def test_the_timeout_parameter_is_a_deadline(plane):
    x = np.ones((1, 3), np.float32)
    assert plane.infer(request(x, parameters={"timeout": 10_000_000})).outputs  # 10 s: plenty
    assert plane.infer(request(x, parameters={"timeout": 0})).outputs  # 0: none, as in Triton
    refused(lambda: plane.infer(request(x, parameters={"timeout": 1})), Kind.DEADLINE)  # 1 us: gone by the check
    assert "non-negative integer" in refused(lambda: plane.infer(request(x, parameters={"timeout": "soon"})))


def test_a_request_past_its_deadline_is_not_computed(plane):
    before = plane.model_statistics("mlp_3_4_1")[0].stats.execution_count
    past = InferRequest(
        "mlp_3_4_1", inputs=request(np.ones((1, 3), np.float32)).inputs, deadline_ns=time.monotonic_ns()
    )
    refused(lambda: plane.infer(past), Kind.DEADLINE)
    assert plane.model_statistics("mlp_3_4_1")[0].stats.execution_count == before


def test_statistics_count_successes_failures_and_rows(plane):
    (before,) = plane.model_statistics("double", "1")
    x = np.ones((4, 3), np.float64)
    plane.infer(request(x, model="double"))
    refused(lambda: plane.infer(request(np.ones((0, 3)), model="double")))
    (after,) = plane.model_statistics("double", "1")
    assert after.stats.success.count - before.stats.success.count == 1
    assert after.stats.fail.count - before.stats.fail.count == 1
    assert after.stats.inference_count - before.stats.inference_count == 4


def test_a_failure_is_one_log_line_naming_the_call_and_model(plane, caplog):
    with caplog.at_level(logging.WARNING, logger="forwardpass.server.dataplane"):
        refused(lambda: plane.infer(request(np.ones((1, 3), np.float32), model="nope")), Kind.NOT_FOUND)
    (line,) = [r.getMessage() for r in caplog.records]
    assert '"call": "infer"' in line and '"model": "nope"' in line and '"kind": "NOT_FOUND"' in line


def test_load_refuses_config_overrides_and_uploaded_files(plane):
    for key in ("config", "file:1/model.onnx"):
        assert f"load parameter '{key}'" in refused(lambda key=key: plane.load("mlp_3_4_1", {key: "x"}))


def test_load_without_model_control_is_unsupported(plane):
    refused(lambda: plane.load("mlp_3_4_1"), Kind.UNSUPPORTED)


class CountingThreads(ThreadPoolExecutor):
    """A real executor that counts the calls handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.handed = 0

    def submit(self, *args, **kwargs):
        self.handed += 1
        return super().submit(*args, **kwargs)


def grpc_request(rows: int, typed: bool = False, parameters: int = 0, outputs: int = 0) -> pb.ModelInferRequest:
    x = np.ones((rows, 3), np.float32)
    message = pb.ModelInferRequest(model_name="mlp_3_4_1")
    tensor = message.inputs.add(name="x", datatype="FP32", shape=x.shape)
    if typed:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    else:
        message.raw_input_contents.append(x.tobytes())
    for i in range(parameters):
        message.parameters[f"p{i}"].bool_param = True
    for i in range(outputs):
        message.outputs.add(name=f"y{i}").parameters["binary_data"].bool_param = True
    return message


@pytest.mark.parametrize(
    "message, on_thread",
    [
        (grpc_request(1), False),
        (grpc_request(65_536), False),  # 786 KB of raw bytes: viewed, not converted
        (grpc_request(100_000), True),  # 1.2 MB of raw bytes: above INLINE_RAW_BYTES
        (grpc_request(100, typed=True), False),  # 300 values in 1.2 KB: below the bound without counting
        (grpc_request(2_000, typed=True), False),  # 6,000 values in 24 KB: counted, and below the bound
        (grpc_request(10_000, typed=True), True),  # 30,000 values converted one by one
        (grpc_request(1, parameters=10_000), True),  # as many parameters: converted one by one too
    ],
    ids=[
        "1 row",
        "65,536 raw rows",
        "100,000 raw rows",
        "100 typed rows",
        "2,000 typed rows",
        "10,000 typed rows",
        "10,000 parameters",
    ],
)
def test_the_grpc_door_converts_many_values_off_its_loop(plane, message, on_thread):
    """A ModelInfer whose values are converted one by one in Python, or whose raw bytes are many, runs on a
    handler thread: the loop keeps answering health and other calls meanwhile."""

    class Context:
        def time_remaining(self):
            return None

    threads = CountingThreads()
    received = parsing(pb.ModelInferRequest, sized=True)(message.SerializeToString())  # as grpc.aio hands it over
    try:
        written = asyncio.run(InferenceServicer(plane, threads).ModelInfer(received, Context()))
    finally:
        threads.shutdown()
    answer = pb.ModelInferResponse.FromString(written)
    assert answer.outputs[0].shape == [message.inputs[0].shape[0], 1]
    assert threads.handed == on_thread


def test_the_grpc_door_counts_converted_values_no_further_than_it_needs():
    """Deciding where a call runs walks a message only as far as the bound: millions of outputs or inputs,
    which fit in a message, are not each looked at on the loop."""
    many = grpc_request(1, outputs=100_000)
    assert codec.converted_values(many, 100) == 100_000  # the outputs' count alone: none looked at
    assert codec.converted_values(many, 1_000_000) == 200_000  # each output and its one parameter
    inputs = pb.ModelInferRequest(model_name="mlp_3_4_1")
    for i in range(100_000):
        inputs.inputs.add(name=f"x{i}").parameters["p"].bool_param = True
    assert codec.converted_values(inputs, 100) == 100  # one parameter an input: 100 inputs looked at
    assert codec.converted_values(grpc_request(10, typed=True), 1_000_000) == 30


@pytest.mark.parametrize(
    "message",
    [
        grpc_request(1),
        grpc_request(100, typed=True),
        grpc_request(1, parameters=1_000),
        grpc_request(1, outputs=1_000),
        pb.ModelInferRequest(inputs=[{"name": "x", "contents": {"bool_contents": [False] * 1_000}}]),
        pb.ModelInferRequest(inputs=[{"name": "x", "contents": {"bytes_contents": [b""] * 1_000}}]),
        pb.ModelInferRequest(parameters={f"{i}": {} for i in range(1_000)}),
    ],
    ids=["1 row", "typed", "parameters", "outputs", "false bools", "empty bytes", "empty parameters"],
)
def test_a_message_s_bytes_outside_its_raw_contents_bound_the_values_it_converts(message):
    """ModelInfer skips the count for a message with fewer such bytes than the bound: each value takes
    at least one byte on the wire, the smallest too (a false bool, an empty string, a parameter unset)."""
    received = parsing(pb.ModelInferRequest, sized=True)(message.SerializeToString())
    outside = received.wire_bytes - sum(map(len, message.raw_input_contents))
    assert codec.converted_values(message, 10**9) <= outside


@pytest.mark.parametrize("rows", [1, 200, 65536])  # shapes and lengths of one byte, two and three as varints
@pytest.mark.parametrize("request_id", ["", "client-7", "é" * 200])
def test_the_answer_s_bytes_are_protobuf_s_serialization_of_the_same_message(rows, request_id):
    """codec.infer_response writes ModelInferResponse's bytes itself: the same bytes protobuf writes,
    for several outputs, names beyond ASCII and lengths of every varint size."""
    rng = np.random.default_rng(rows)
    outputs = (
        OutputTensor("y", "FP32", rng.random((rows, 1), np.float32)),
        OutputTensor("a[1]·hidden", "FP64", rng.random((rows, 3))),
        OutputTensor("z", "FP32", np.zeros((rows, 0), np.float32)),  # no values: an empty raw entry
    )
    answer = InferResponse("mlp_3_4_1", "12", request_id, outputs)
    expected = pb.ModelInferResponse(model_name=answer.model, model_version=answer.version, id=request_id)
    for output in outputs:
        expected.outputs.add(name=output.name, datatype=output.datatype, shape=output.array.shape)
        expected.raw_output_contents.append(output.array.tobytes())
    written = codec.infer_response(answer)
    assert written == expected.SerializeToString()
    assert pb.ModelInferResponse.FromString(written) == expected
