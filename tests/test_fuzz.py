"""Fuzzing a live server: random requests and random bytes, every answer a proper status.

Every message that parses gets an answer or INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED (or
UNAVAILABLE for the model that failed to load), never UNKNOWN or INTERNAL; bytes that are no
ModelInferRequest at all may get grpcio's own INTERNAL before our code runs. Model names and versions
come from wide Unicode alphabets (path separators, dots, digits of other scripts such as "²" and "１",
combining marks, right-to-left text) beside the served names and versions, in ModelInfer and in
ModelMetadata, ModelConfig, ModelReady and ModelStatistics: a name that is no folder of the repository,
or a version that is not ASCII digits without a leading zero, is never answered OK. The requests go in
batches; after each, no worker has died and a valid request still gets the oracle's answer.
"""

import json
import os
import re

import grpc
import numpy as np
import pytest
from hypothesis import example, given, seed, settings
from hypothesis import strategies as st

from forwardpass.builder.readback import read_file
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from numerics import assert_matches_oracle, random_input

METHOD = "/inference.GRPCInferenceService/ModelInfer"
PARSED_OK = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}
TRIED = {"structured": 0, "bytes": 0, "by_name": 0}
EXAMPLES = int(os.environ.get("FORWARDPASS_FUZZ_EXAMPLES", "300"))  # the soak raises it; CI keeps it short
BATCHES = 5  # each fuzz test runs EXAMPLES examples in this many batches, checking the server after each

# Drawn often: the served models (the "versions" and "latest" models have versions 1 and 2).
SERVED = ("mlp_3_4_1", "mlp_3_4_1_sigmoid", "columns", "double", "small", "hidden", "versions", "latest", "broken")
# Characters that could turn a name into a path or a version into another number, or look the same as
# a valid one: separators, dots, NUL and blanks, digits of other scripts (superscript, fullwidth,
# Arabic-Indic, Devanagari, NKo), combining marks, zero-width and bidi controls, Hebrew and Arabic.
TRICKY = "/\\.\x00 \t\n²³¹١٣۳१１０߁\u0301\u0300\u200b\u200d\u200e\u200f\u202e\u2066\ufeff\ufe0fאשبل"
# Every code point but the surrogates (a protobuf string must be valid UTF-8), and more of the tricky
# kinds: numbers, marks, format and control characters, separators.
unicode = st.characters(codec="utf-8")
tricky = st.sampled_from(TRICKY) | st.characters(
    categories=["Nd", "No", "Nl", "Mn", "Me", "Cf", "Cc", "Zs", "Zl", "Zp"], codec="utf-8"
)
wide = st.text(alphabet=unicode | tricky, max_size=12)

# fmt: off
# Names that are paths, hidden, empty, or look like a served one.
ODD_NAMES = ["", ".", "..", ".hidden", "./mlp_3_4_1", "../mlp_3_4_1", "/mlp_3_4_1", "mlp_3_4_1/", "mlp_3_4_1/1",
             "mlp_3_4_1\\1", "..\\mlp_3_4_1", "mlp_3_4_1\x00", "mlp_3_4_1\u0301", "MLP_3_4_1",
             "ｍｌｐ_３_４_１"]
# Versions that are no ASCII digits without a leading zero, though int() or str.isdigit() may take them.
ODD_VERSIONS = ["0", "00", "01", "-1", "+1", " 1", "1 ", "1\n", "1.0", "1e0", "0x1", "1_0",
                "²", "１", "١", "१", "1²", "x"]
# fmt: on
# Always tried, in the first batch: names and versions the server must refuse, and three pairs it serves.
PINNED = (
    [("mlp_3_4_1", v) for v in ("²", "01", "１", "-1", "x", "1 ", "0")]
    + [(n, "") for n in (".", "..", ".mlp_3_4_1", "../mlp_3_4_1", "mlp_3_4_1/1", "mlp_3_4_1\\1", "mlp_3_4_1\x00", "")]
    + [("mlp_3_4_1", ""), ("mlp_3_4_1", "1"), ("versions", "2")]
)

served_names = st.sampled_from(SERVED)
names = (
    served_names
    | st.sampled_from(ODD_NAMES)
    | wide
    | st.tuples(wide, served_names, wide).map("".join)  # a served name inside other text
    | st.tuples(served_names | wide, st.sampled_from(["/", "\\", "/../", "\\..\\", "/./"]), served_names | wide).map(
        "".join
    )
)
versions = (
    st.sampled_from(["", "1", "2"])
    | st.integers(0, 10**30).map(str)  # spelled right, mostly absent
    | st.sampled_from(ODD_VERSIONS)
    | st.text(alphabet=st.characters(categories=["Nd", "No", "Nl"]) | st.sampled_from("0123456789+-_. "), max_size=6)
    | wide
)
dims = st.integers(0, 9) | st.sampled_from([-1, -(2**40), 2**31, 2**62, 65536 * 20])
datatypes = st.sampled_from(["FP32", "FP64", "INT32", "BYTES", "BF16", ""]) | st.text(max_size=5)
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def requests(draw):
    request = pb.ModelInferRequest(model_name=draw(served_names | names), model_version=draw(versions), id=draw(wide))
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


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.url) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def served(repository):
    """The model folders of the served repository: the only names that can be answered OK."""
    return frozenset(p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))


def may_answer(served, name: str, version: str) -> bool:
    """Whether a model name and version could be answered OK: a folder of the repository, and no
    version (the latest) or one in ASCII digits without a leading zero."""
    return name in served and (version == "" or re.fullmatch("[1-9][0-9]*", version) is not None)


def status(call, data: bytes) -> str:
    try:
        call(data, timeout=30)
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name


def valid_request(X: np.ndarray, name: str = "mlp_3_4_1", version: str = "") -> pb.ModelInferRequest:
    """A request for X (columns) that mlp_3_4_1 answers, under the given model name and version."""
    request = pb.ModelInferRequest(model_name=name, model_version=version)
    request.inputs.add(name="x", datatype="FP32", shape=X.T.shape)
    request.raw_input_contents.append(np.ascontiguousarray(X.T).tobytes())
    return request


def still_answers(call, repository):
    spec = read_file(repository / "mlp_3_4_1" / "1" / "model.onnx").spec
    X = random_input(np.random.default_rng(0), 3, 4, "float32")
    response = pb.ModelInferResponse.FromString(call(valid_request(X).SerializeToString(), timeout=30))
    assert_matches_oracle(
        spec, X, np.frombuffer(response.raw_output_contents[0], np.float32).reshape(4, 1).T, "float32"
    )


def assert_server_well(call, repository, server):
    still_answers(call, repository)
    assert "died" not in server.output(), server.output()


def fuzz_batch(batch: int, strategy, check, pinned=()) -> None:
    """`check` on EXAMPLES // BATCHES examples drawn from `strategy`: one batch of a fuzz test; the
    first batch also checks the `pinned` examples."""

    @settings(max_examples=max(1, EXAMPLES // BATCHES), deadline=None)
    @given(strategy)
    def one_batch(drawn):
        check(drawn)

    for pinned_example in pinned if batch == 0 else ():
        one_batch = example(pinned_example)(one_batch)
    if settings.default.derandomize:  # a fixed seed per batch, or every batch would draw the same examples
        one_batch = seed(batch)(one_batch)
    one_batch()


@pytest.mark.parametrize("batch", range(BATCHES))
def test_structured_requests_get_a_proper_status(call, repository, server, served, batch):
    def check(request):
        TRIED["structured"] += 1
        code = status(call, request.SerializeToString())
        assert code in PARSED_OK, f"{code} for {request}"
        assert code != "OK" or may_answer(served, request.model_name, request.model_version), f"OK for {request}"

    X = np.ones((3, 2), np.float32)
    fuzz_batch(batch, requests(), check, pinned=[valid_request(X, name, version) for name, version in PINNED])
    assert_server_well(call, repository, server)


@pytest.mark.parametrize("batch", range(BATCHES))
def test_random_bytes_get_a_proper_status(call, repository, server, served, batch):
    def check(data):
        TRIED["bytes"] += 1
        try:
            request = pb.ModelInferRequest.FromString(data)
        except Exception:  # protobuf's DecodeError: grpcio's deserializer fails the same way
            request = None
        code = status(call, data)
        assert code in (PARSED_OK if request is not None else PARSED_OK | {"INTERNAL"}), f"{code} for {data!r}"
        answerable = request is not None and may_answer(served, request.model_name, request.model_version)
        assert code != "OK" or answerable, f"OK for {data!r}"

    fuzz_batch(batch, st.binary(max_size=200), check)
    assert_server_well(call, repository, server)


ANSWERED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE"}


def model_metadata(stub, served, name, version):
    response = stub.ModelMetadata(pb.ModelMetadataRequest(name=name, version=version), timeout=30)
    assert may_answer(served, name, version) and response.name == name


def model_config(stub, served, name, version):
    response = stub.ModelConfig(pb.ModelConfigRequest(name=name, version=version), timeout=30)
    assert may_answer(served, name, version) and response.config.name == name


def model_ready(stub, served, name, version):
    response = stub.ModelReady(pb.ModelReadyRequest(name=name, version=version), timeout=30)
    assert not response.ready or may_answer(served, name, version)


def model_statistics(stub, served, name, version):
    """An empty name asks for every model: then only the version must be one."""
    response = stub.ModelStatistics(pb.ModelStatisticsRequest(name=name, version=version), timeout=30)
    assert may_answer(served, name or "mlp_3_4_1", version)
    assert all(s.name == (name or s.name) and s.version == (version or s.version) for s in response.model_stats)


@pytest.mark.parametrize("rpc", [model_metadata, model_config, model_ready, model_statistics], ids=lambda f: f.__name__)
def test_any_model_name_and_version_get_a_proper_status(stub, call, repository, server, served, rpc):
    def check(pair):
        TRIED["by_name"] += 1
        name, version = pair
        try:
            rpc(stub, served, name, version)
        except grpc.RpcError as exc:
            assert exc.code().name in ANSWERED, f"{exc.code().name} for name {name!r} version {version!r}: {exc}"
        except AssertionError as exc:
            raise AssertionError(f"OK with a wrong answer for name {name!r} version {version!r}") from exc

    # a served name half the time, so that the versions are looked at too
    fuzz_batch(0, st.tuples(served_names, versions) | st.tuples(names, versions), check, pinned=PINNED)
    rpc(stub, served, "mlp_3_4_1", "1")  # and a served model and version is answered
    assert_server_well(call, repository, server)


def test_the_server_still_answers_and_no_worker_died(call, repository, server, tmp_path_factory):
    assert_server_well(call, repository, server)
    report = tmp_path_factory.getbasetemp() / "fuzz-tried.json"
    report.write_text(json.dumps(TRIED))
    print(f"fuzz requests tried: {TRIED}")
