"""The gRPC server, through a real socket: every RPC, the oracle's answers, every bad input's status."""

import threading
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from forwardpass.builder.readback import read_file
from forwardpass.client import Client
from forwardpass.errors import ForwardpassError
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from harness import ROOT, ServerProcess, in_threads
from numerics import assert_matches_oracle, random_input

COMMITTED = ("mlp_3_4_1", "mlp_3_4_1_sigmoid")


@pytest.fixture(scope="module")
def channel(server):
    limits = [("grpc.max_send_message_length", 64 * 2**20), ("grpc.max_receive_message_length", 64 * 2**20)]
    with grpc.insecure_channel(server.url, options=limits) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def client(server):
    with Client(server.url, timeout=30) as client:
        yield client


def spec_of(repository, name, version=None):
    folder = repository / name
    version = version or max(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    return read_file(folder / str(version) / "model.onnx").spec


def raw_request(model, x, name="x", datatype="FP32", **fields):
    request = pb.ModelInferRequest(model_name=model, **fields)
    request.inputs.add(name=name, datatype=datatype, shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    return request


def decode(response, index=0):
    out = response.outputs[index]
    dtype = {"FP32": np.float32, "FP64": np.float64}[out.datatype]
    return np.frombuffer(response.raw_output_contents[index], dtype=dtype).reshape(tuple(out.shape))


# Health and metadata


def test_server_is_live_and_ready(stub):
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready


def test_the_banner_names_the_pages_url(server):
    (banner,) = [line for line in server.lines if "serving on" in line]
    assert f"; page: {server.http_url}/" in banner, banner
    with urllib.request.urlopen(f"{server.http_url}/", timeout=10) as answer:
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/html")


def test_a_server_without_the_page_names_none():
    server = ServerProcess(ROOT / "models", "--workers", "1", "--no-page")
    try:
        (banner,) = [line for line in server.lines if "serving on" in line]
        assert server.http_url and "page:" not in banner, banner
    finally:
        assert server.stop() == 0


def test_model_ready_for_loaded_models_only(stub):
    assert stub.ModelReady(pb.ModelReadyRequest(name="mlp_3_4_1")).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="versions", version="1")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="latest", version="1")).ready  # not loaded: latest only
    assert not stub.ModelReady(pb.ModelReadyRequest(name="broken")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="nope")).ready


def test_server_metadata_lists_what_is_served(stub):
    meta = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "forwardpass" and meta.version
    assert list(meta.extensions) == ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]


def test_model_metadata_uses_tritons_shapes(stub):
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp_3_4_1"))
    assert (meta.name, list(meta.versions), meta.platform) == ("mlp_3_4_1", ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 3])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("y", "FP32", [-1, 1])]
    columns = stub.ModelMetadata(pb.ModelMetadataRequest(name="columns"))
    assert list(columns.inputs[0].shape) == [3, -1] and columns.inputs[0].name == "X"
    assert list(stub.ModelMetadata(pb.ModelMetadataRequest(name="versions")).versions) == ["1", "2"]


def test_model_config_is_the_settled_config_pbtxt(stub):
    config = stub.ModelConfig(pb.ModelConfigRequest(name="small")).config
    assert (config.name, config.platform, config.max_batch_size) == ("small", "onnxruntime_onnx", 8)
    assert config.HasField("dynamic_batching")
    assert [(i.name, list(i.dims)) for i in config.input] == [("x", [3])]
    columns = stub.ModelConfig(pb.ModelConfigRequest(name="columns")).config
    assert columns.max_batch_size == 0 and list(columns.input[0].dims) == [3, -1]
    assert stub.ModelConfig(pb.ModelConfigRequest(name="versions")).config.version_policy.HasField("all")


def test_repository_index_reports_the_bad_model_and_why(stub, repository):
    index = stub.RepositoryIndex(pb.RepositoryIndexRequest())
    rows = {(m.name, m.version): (m.state, m.reason) for m in index.models}
    assert rows[("mlp_3_4_1", "1")] == ("READY", "")
    assert rows[("versions", "2")][0] == "READY"
    state, reason = rows[("broken", "")]
    assert state == "UNAVAILABLE" and "not an ONNX model" in reason
    assert reason.startswith("broken/1/model.onnx: ") and str(repository.parent) not in reason, reason  # no server path
    ready_only = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True))
    assert "broken" not in {m.name for m in ready_only.models}


def test_statistics_count_rows_and_runs(stub):
    before = stub.ModelStatistics(pb.ModelStatisticsRequest(name="mlp_3_4_1_sigmoid")).model_stats[0]
    stub.ModelInfer(raw_request("mlp_3_4_1_sigmoid", np.ones((5, 3), np.float32)))
    after = stub.ModelStatistics(pb.ModelStatisticsRequest(name="mlp_3_4_1_sigmoid")).model_stats[0]
    assert after.inference_count == before.inference_count + 5
    assert after.execution_count == before.execution_count + 1
    assert after.inference_stats.success.count == before.inference_stats.success.count + 1
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    assert after.last_inference > 0

    def runs_of_5_rows(stats):
        return sum(b.compute_infer.count for b in stats.batch_stats if b.batch_size == 5)

    assert runs_of_5_rows(after) == runs_of_5_rows(before) + 1
    every = stub.ModelStatistics(pb.ModelStatisticsRequest()).model_stats
    assert {(s.name, s.version) for s in every} >= {("versions", "1"), ("versions", "2"), ("mlp_3_4_1", "1")}


def test_health_overall_and_per_model(channel):
    health = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == serving
    assert health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")).status == serving
    assert health.Check(health_pb2.HealthCheckRequest(service="mlp_3_4_1")).status == serving
    assert (
        health.Check(health_pb2.HealthCheckRequest(service="broken")).status
        == health_pb2.HealthCheckResponse.NOT_SERVING
    )
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_describes_the_service(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    services = database.get_services()
    assert "inference.GRPCInferenceService" in services and "grpc.health.v1.Health" in services
    described = database.FindFileContainingSymbol("inference.GRPCInferenceService")
    methods = {m.name for m in described.service[0].method}
    assert {"ModelInfer", "ModelMetadata", "ModelConfig", "RepositoryIndex"} <= methods


def test_rpcs_we_do_not_serve_are_unimplemented(channel):
    load = channel.unary_unary("/inference.GRPCInferenceService/SystemSharedMemoryStatus")
    with pytest.raises(grpc.RpcError) as info:
        load(b"")
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


# Answers


@pytest.mark.parametrize("batch", [1, 7, 1024, 65536])
@pytest.mark.parametrize("model", COMMITTED)
def test_answers_match_the_oracle(stub, client, repository, model, batch):
    spec = spec_of(repository, model)
    X = random_input(np.random.default_rng(batch), 3, batch, "float32")
    response = stub.ModelInfer(raw_request(model, np.ascontiguousarray(X.T), id=f"req-{batch}"))
    assert (response.model_name, response.model_version, response.id) == (model, "1", f"req-{batch}")
    assert (response.outputs[0].name, list(response.outputs[0].shape)) == ("y", [batch, 1])
    assert_matches_oracle(spec, X, decode(response).T, "float32")
    assert_matches_oracle(spec, X, client.infer(model, X.T).T, "float32")


def test_typed_contents_are_accepted_and_answered_raw(stub, repository):
    X = random_input(np.random.default_rng(1), 3, 4, "float64")
    request = pb.ModelInferRequest(model_name="double")
    request.inputs.add(
        name="x", datatype="FP64", shape=[4, 3], contents=pb.InferTensorContents(fp64_contents=X.T.ravel())
    )
    response = stub.ModelInfer(request)
    assert not response.outputs[0].HasField("contents") and len(response.raw_output_contents) == 1
    assert_matches_oracle(spec_of(repository, "double"), X, decode(response).T, "float64")


def test_columns_model_takes_examples_as_columns(stub, repository):
    X = random_input(np.random.default_rng(2), 3, 9, "float32")
    response = stub.ModelInfer(raw_request("columns", X, name="X"))
    assert list(response.outputs[0].shape) == [1, 9]
    assert_matches_oracle(spec_of(repository, "columns"), X, decode(response), "float32")


@pytest.mark.parametrize("batch", [6, 5000])  # 5,000 rows run through the columns-inside session
def test_hidden_outputs_can_be_requested(stub, repository, batch):
    spec = spec_of(repository, "hidden")
    X = random_input(np.random.default_rng(3), 3, batch, "float32")
    request = raw_request("hidden", np.ascontiguousarray(X.T))
    for name in ("A2", "Z1", "y"):
        request.outputs.add(name=name)
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["A2", "Z1", "y"]
    assert [list(o.shape)[0] for o in response.outputs] == [batch] * 3
    assert_matches_oracle(spec, X, decode(response, 0).T, "float32", layer="A2")
    assert_matches_oracle(spec, X, decode(response, 1).T, "float32", layer="Z1")
    assert_matches_oracle(spec, X, decode(response, 2).T, "float32")
    everything = stub.ModelInfer(raw_request("hidden", np.ascontiguousarray(X.T)))
    assert [o.name for o in everything.outputs] == ["y", "Z1", "A1", "Z2", "A2", "Z3"]


def test_model_version_picks_among_the_loaded(stub, repository):
    X = random_input(np.random.default_rng(4), 3, 3, "float32")
    x = np.ascontiguousarray(X.T)
    for version in ("1", "2"):
        response = stub.ModelInfer(raw_request("versions", x, model_version=version))
        assert response.model_version == version
        assert_matches_oracle(spec_of(repository, "versions", int(version)), X, decode(response).T, "float32")
    assert stub.ModelInfer(raw_request("versions", x)).model_version == "2"  # the latest by default


def test_nan_in_is_nan_out(stub):
    x = np.array([[np.nan, 0.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
    y = decode(stub.ModelInfer(raw_request("mlp_3_4_1_sigmoid", x)))
    assert np.isnan(y[0, 0]) and np.isfinite(y[1, 0])


# Bad input: one status each, a message naming the problem, and the server keeps serving


def _typed(model, values, datatype="FP32", shape=(2, 3), field="fp32_contents"):
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype=datatype, shape=shape, contents=pb.InferTensorContents(**{field: values}))
    return request


def _both_raw_and_typed():
    request = _typed("mlp_3_4_1", [0.0] * 6)
    request.raw_input_contents.append(np.zeros((2, 3), np.float32).tobytes())
    return request


def _bad_raw_length():
    request = raw_request("mlp_3_4_1", np.zeros((2, 3), np.float32))
    request.raw_input_contents[0] = request.raw_input_contents[0][:-4]
    return request


def _two_inputs():
    request = raw_request("mlp_3_4_1", np.zeros((2, 3), np.float32))
    request.inputs.add(name="x2", datatype="FP32", shape=[2, 3])
    return request


def _unknown_output():
    request = raw_request("mlp_3_4_1", np.zeros((2, 3), np.float32))
    request.outputs.add(name="Z9")
    return request


BAD = {
    "unknown model": (raw_request("nope", np.zeros((1, 3), np.float32)), "NOT_FOUND", "unknown model 'nope'"),
    "unknown version": (
        raw_request("mlp_3_4_1", np.zeros((1, 3), np.float32), model_version="7"),
        "NOT_FOUND",
        "model 'mlp_3_4_1' has no loaded version 7; loaded: 1",
    ),
    "unloaded version": (
        raw_request("latest", np.zeros((1, 3), np.float32), model_version="1"),
        "NOT_FOUND",
        "no loaded version 1",
    ),
    "model not ready": (
        raw_request("broken", np.zeros((1, 3), np.float32)),
        "UNAVAILABLE",
        "model 'broken' is not ready",
    ),
    "wrong input name": (
        raw_request("mlp_3_4_1", np.zeros((1, 3), np.float32), name="input"),
        "INVALID_ARGUMENT",
        "unexpected input 'input' for model 'mlp_3_4_1'; it takes 'x'",
    ),
    "wrong rank": (
        raw_request("mlp_3_4_1", np.zeros(3, np.float32)),
        "INVALID_ARGUMENT",
        "expected [-1, 3], got [3]",
    ),
    "wrong width": (
        raw_request("mlp_3_4_1", np.zeros((2, 4), np.float32)),
        "INVALID_ARGUMENT",
        "expected [-1, 3], got [2, 4]",
    ),
    "wrong dtype": (
        raw_request("mlp_3_4_1", np.zeros((2, 3), np.float64), datatype="FP64"),
        "INVALID_ARGUMENT",
        "has datatype 'FP64', but model 'mlp_3_4_1' takes 'FP32'",
    ),
    "raw byte count": (_bad_raw_length(), "INVALID_ARGUMENT", "needs 24 bytes, got 20"),
    "raw and typed": (_both_raw_and_typed(), "INVALID_ARGUMENT", "both raw_input_contents and contents.fp32_contents"),
    "typed count": (_typed("mlp_3_4_1", [0.0] * 5), "INVALID_ARGUMENT", "has 5 values in contents.fp32_contents"),
    "typed field": (
        _typed("mlp_3_4_1", [0] * 6, field="int_contents"),
        "INVALID_ARGUMENT",
        "its values go in contents.fp32_contents, got int_contents",
    ),
    "no data": (_typed("mlp_3_4_1", []), "INVALID_ARGUMENT", "no data for input 'x'"),
    "no inputs": (pb.ModelInferRequest(model_name="mlp_3_4_1"), "INVALID_ARGUMENT", "takes 1 input 'x', got none"),
    "two inputs": (_two_inputs(), "INVALID_ARGUMENT", "takes 1 input 'x', got 'x', 'x2'"),
    "negative dim": (_typed("mlp_3_4_1", [0.0] * 6, shape=(-2, 3)), "INVALID_ARGUMENT", "got [-2, 3]"),
    "batch above limit": (
        raw_request("small", np.zeros((9, 3), np.float32)),
        "INVALID_ARGUMENT",
        "batch of 9 rows is above the max_batch_size 8 of model 'small'",
    ),
    "empty batch": (raw_request("mlp_3_4_1", np.zeros((0, 3), np.float32)), "INVALID_ARGUMENT", "empty batch"),
    "unknown output": (_unknown_output(), "INVALID_ARGUMENT", "unknown output 'Z9' for model 'mlp_3_4_1'; it has y"),
    "above the message limit": (
        raw_request("mlp_3_4_1", np.zeros((1_500_000, 3), np.float32)),  # 18 MB; this server allows 16 MiB
        "RESOURCE_EXHAUSTED",
        "",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_its_status_and_the_server_keeps_serving(stub, repository, case):
    request, code, message = BAD[case]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code().name == code, info.value.details()
    assert message in info.value.details()
    X = random_input(np.random.default_rng(5), 3, 2, "float32")
    y = decode(stub.ModelInfer(raw_request("mlp_3_4_1", np.ascontiguousarray(X.T))))
    assert_matches_oracle(spec_of(repository, "mlp_3_4_1"), X, y.T, "float32")


def test_metadata_of_unknown_and_not_ready_models(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelConfig(pb.ModelConfigRequest(name="broken"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_failures_are_counted(stub):
    def fails():
        return stub.ModelStatistics(pb.ModelStatisticsRequest(name="small")).model_stats[0].inference_stats.fail.count

    before = fails()
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(raw_request("small", np.zeros((9, 3), np.float32)))
    assert fails() == before + 1


# Concurrency


def test_64_concurrent_callers_each_get_their_own_answer(server, repository):
    spec = spec_of(repository, "mlp_3_4_1")
    barrier = threading.Barrier(64)

    def caller(seed):
        rng = np.random.default_rng(seed)
        with Client(server.url, timeout=60) as client:
            barrier.wait()
            for _ in range(5):
                X = random_input(rng, 3, int(rng.integers(1, 50)), "float32")
                assert_matches_oracle(spec, X, client.infer("mlp_3_4_1", X.T).T, "float32")

    errors = in_threads(caller, [(seed,) for seed in range(64)])
    assert not errors, errors[:3]


# The client


def test_client_splits_a_batch_above_its_message_limit(server, repository):
    spec = spec_of(repository, "mlp_3_4_1")
    X = random_input(np.random.default_rng(6), 3, 200_000, "float32")  # 2.4 MB
    with Client(server.url, timeout=60, max_message_bytes=2**20) as small:
        y = small.infer("mlp_3_4_1", X.T)
    assert y.shape == (200_000, 1)
    assert_matches_oracle(spec, X, y.T, "float32")


def test_client_errors_name_the_status(client):
    with pytest.raises(ForwardpassError, match="NOT_FOUND: unknown model 'nope'"):
        client.infer("nope", np.zeros((1, 3), np.float32))


def test_client_names_an_unreachable_server():
    with Client("127.0.0.1:1", timeout=5) as dead, pytest.raises(ForwardpassError, match="127.0.0.1:1"):
        dead.ready()
