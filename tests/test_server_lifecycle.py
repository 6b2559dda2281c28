"""Starting and stopping `forwardpass serve`, and `forwardpass infer`, as processes users run."""

import shutil
import socket
import time

import grpc
import numpy as np
import pytest

from forwardpass.builder.readback import read_file
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from harness import ROOT, ServerProcess, assert_one_error_line, run_cli
from numerics import assert_matches_oracle, random_input


@pytest.fixture
def committed(tmp_path):
    shutil.copytree(ROOT / "models", tmp_path / "models")
    return tmp_path / "models"


def test_calls_in_flight_finish_on_sigterm_and_new_ones_are_refused(committed):
    # A batching delay of 1.5 s holds every call inside the server, in flight for certain, when
    # SIGTERM comes; the grace period lets them finish.
    config = committed / "mlp_3_4_1" / "config.pbtxt"
    config.write_text(config.read_text() + "dynamic_batching { max_queue_delay_microseconds: 1500000 }\n")
    server = ServerProcess(committed, "--grace", "30", "--workers", "1")
    X = random_input(np.random.default_rng(0), 3, 5, "float32")
    request = pb.ModelInferRequest(model_name="mlp_3_4_1")
    request.inputs.add(name="x", datatype="FP32", shape=[5, 3])
    request.raw_input_contents.append(np.ascontiguousarray(X.T).tobytes())
    results, errors = [], []
    with grpc.insecure_channel(server.url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
        futures = [stub.ModelInfer.future(request, timeout=60) for _ in range(6)]
        time.sleep(0.5)  # received and waiting in the batcher
        server.process.send_signal(15)
        for future in futures:
            try:
                results.append(future.result())
            except grpc.RpcError as exc:
                errors.append(exc)
        assert not errors, [e.details() for e in errors]
        spec = read_file(committed / "mlp_3_4_1" / "1" / "model.onnx").spec
        for response in results:
            y = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(5, 1)
            assert_matches_oracle(spec, X, y.T, "float32")
        assert server.process.wait(60) == 0, server.output()
        with pytest.raises(grpc.RpcError) as info:
            stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "workers: no new calls; finishing those in flight" in server.output()
    assert "all workers stopped" in server.output()


def test_a_broken_model_stops_start_up_with_one_line(committed):
    (committed / "mlp_3_4_1" / "1" / "model.onnx").write_bytes(b"garbage")
    result = run_cli("serve", "--model-repository", committed, "--port", "0", "--http-port", "0")
    assert_one_error_line(result, "mlp_3_4_1/1/model.onnx: not an ONNX model", logs_allowed=True)


def test_a_non_mlp_model_names_the_node(committed):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="lonely")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])  # fmt: skip
    save(helper.make_model(graph), committed / "mlp_3_4_1" / "1" / "model.onnx")
    assert_one_error_line(
        run_cli("serve", "--model-repository", committed, "--port", "0", "--http-port", "0"),
        "node 'lonely' (op Relu)",
        logs_allowed=True,
    )


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ('name: "other"', "name 'other' differs from the folder name 'mlp_3_4_1'"),
        ('platform: "tensorflow_savedmodel"', "is not onnxruntime_onnx"),
        ("max_batch_size: 4\ninput [ { name: 'x' data_type: TYPE_FP32 dims: [ 5 ] } ]", "dims [5]"),
        ("max_batch_size: 4\noutput [ { name: 'Z7' data_type: TYPE_FP32 dims: [ 1 ] } ]", "'Z7' is not an output"),
        ("max_batch_size: 4\nbogus_field: 1", "bogus_field"),
    ],
)
def test_a_config_that_does_not_fit_the_model_is_refused(committed, config, match):
    (committed / "mlp_3_4_1" / "config.pbtxt").write_text(config + "\n")
    assert_one_error_line(
        run_cli("serve", "--model-repository", committed, "--port", "0", "--http-port", "0"), match, logs_allowed=True
    )


def test_fields_we_ignore_are_warned_about(committed):
    config = (committed / "mlp_3_4_1" / "config.pbtxt").read_text()
    (committed / "mlp_3_4_1" / "config.pbtxt").write_text(config + "model_warmup [ { name: 'w' batch_size: 1 } ]\n")
    server = ServerProcess(committed)
    assert server.stop() == 0
    assert "field 'model_warmup' is ignored by forwardpass" in server.output()


def test_a_model_without_config_gets_what_build_would_write(committed):
    (committed / "mlp_3_4_1" / "config.pbtxt").unlink()
    server = ServerProcess(committed)
    try:
        with grpc.insecure_channel(server.url) as channel:
            config = (
                pb_grpc.GRPCInferenceServiceStub(channel).ModelConfig(pb.ModelConfigRequest(name="mlp_3_4_1")).config
            )
        assert config.max_batch_size == 1_048_576 and list(config.input[0].dims) == [3]
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    "busy, other, door", [("--grpc-port", "--http-port", "gRPC"), ("--http-port", "--grpc-port", "HTTP")]
)
def test_port_in_use_is_one_line_and_exit_2(committed, busy, other, door):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_error_line(
            run_cli("serve", "--model-repository", committed, busy, port, other, "0"),
            f"127.0.0.1:{port} ({door}): it is in use",
            logs_allowed=True,
        )


def test_missing_repository(tmp_path):
    assert_one_error_line(
        run_cli("serve", "--model-repository", tmp_path / "none", "--port", "0", "--http-port", "0"),
        "is not a folder",
        logs_allowed=True,
    )


def test_sigint_stops_gracefully_too(committed):
    server = ServerProcess(committed)
    assert server.stop(2) == 0


def test_infer_command_prints_the_oracles_numbers(server, repository, tmp_path):
    X = random_input(np.random.default_rng(0), 3, 5, "float32")
    np.savetxt(tmp_path / "x.csv", X.T, delimiter=",")
    result = run_cli("infer", "--url", server.url, "--model", "mlp_3_4_1", "--input", tmp_path / "x.csv")
    assert result.returncode == 0, result.stderr
    y = np.loadtxt(result.stdout.splitlines(), delimiter=",", ndmin=2)
    spec = read_file(repository / "mlp_3_4_1" / "1" / "model.onnx").spec
    assert_matches_oracle(spec, X, y.T, "float32")
    out = tmp_path / "y.npy"
    assert run_cli("infer", "--url", server.url, "--model", "versions", "--model-version", "1", "--input",
                   tmp_path / "x.csv", "--output", out).returncode == 0  # fmt: skip
    assert np.load(out).shape == (5, 1)
    readme_example = run_cli("infer", "--url", server.url, "--model", "mlp_3_4_1", "--input", "examples/x.csv")
    assert readme_example.returncode == 0 and len(readme_example.stdout.splitlines()) == 3


def test_infer_command_errors_are_one_line(server, tmp_path):
    np.savetxt(tmp_path / "x.csv", np.ones((2, 4)), delimiter=",")
    assert_one_error_line(run_cli("infer", "--url", server.url, "--model", "mlp_3_4_1", "--input", tmp_path / "x.csv"),
                   "INVALID_ARGUMENT: unexpected shape for input 'x'", logs_allowed=True)  # fmt: skip
    assert_one_error_line(run_cli("infer", "--url", server.url, "--model", "nope", "--input", tmp_path / "x.csv"),
                   "NOT_FOUND: unknown model 'nope'", logs_allowed=True)  # fmt: skip
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert_one_error_line(run_cli("infer", "--url", f"127.0.0.1:{port}", "--model", "m", "--input", tmp_path / "x.csv",
                           "--timeout", "5"), f"cannot reach 127.0.0.1:{port}", logs_allowed=True)  # fmt: skip


def test_a_second_server_on_a_busy_port_is_refused_not_silently_sharing(committed):
    first = ServerProcess(committed)  # grpcio and our HTTP door both bind with SO_REUSEPORT
    http_port = first.http_url.rsplit(":", 1)[1]
    try:
        result = run_cli("serve", "--model-repository", committed, "--port", first.port, "--http-port", "0")
        assert_one_error_line(result, "(gRPC): it is in use", logs_allowed=True)
        result = run_cli("serve", "--model-repository", committed, "--port", "0", "--http-port", http_port)
        assert_one_error_line(result, "(HTTP): it is in use", logs_allowed=True)
    finally:
        first.stop()


def test_the_banner_names_both_doors_and_no_http_turns_http_off(committed):
    both = ServerProcess(committed, "--workers", "1")
    only_grpc = ServerProcess(committed, "--workers", "1", "--no-http")
    try:
        assert both.http_url.startswith("http://127.0.0.1:") and only_grpc.http_url == ""
        assert "(gRPC)" in only_grpc.output() and "(HTTP)" not in only_grpc.output()
    finally:
        assert both.stop() == 0 and only_grpc.stop() == 0


def test_kind_gpu_without_cuda_is_a_clear_start_up_error(committed):
    from forwardpass.runtime import cuda_offered

    if cuda_offered():
        pytest.skip("this onnxruntime offers CUDA")
    config = (committed / "mlp_3_4_1" / "config.pbtxt").read_text()
    (committed / "mlp_3_4_1" / "config.pbtxt").write_text(config + "instance_group [ { kind: KIND_GPU } ]\n")
    assert_one_error_line(
        run_cli("serve", "--model-repository", committed, "--port", "0", "--http-port", "0"),
        "onnxruntime-gpu",
        logs_allowed=True,
    )
