"""The forwardpass command, run as users run it: a real process, real files, real onnxruntime."""

import re

import numpy as np
import pytest
from google.protobuf import text_format

from forwardpass.builder.oracle import forward
from forwardpass.builder.readback import read_file
from forwardpass.builder.spec import ACTIVATIONS, ALIASES
from forwardpass.dtypes import DTYPES
from forwardpass.protos.model_config_pb2 import DataType, ModelConfig
from forwardpass.tolerance import compare

from harness import ROOT, ServerProcess, assert_one_error_line, run_cli


@pytest.fixture
def repo(tmp_path):
    return tmp_path / "models"


def test_build_writes_a_triton_repository_and_next_versions(repo):
    first = run_cli("build", "--repository", repo)
    assert first.returncode == 0, first.stderr
    model_dir = repo / "mlp_3_4_1"
    assert (model_dir / "1" / "model.onnx").exists() and (model_dir / "1" / "weights.npz").exists()
    assert "max_batch_size: 1048576" in (model_dir / "config.pbtxt").read_text()
    second = run_cli("build", "--repository", repo, "--seed", "1")
    assert second.returncode == 0 and (model_dir / "2" / "model.onnx").exists()
    before = (model_dir / "2" / "model.onnx").read_bytes()
    assert run_cli("build", "--repository", repo, "--seed", "2", "--force").returncode == 0
    assert not (model_dir / "3").exists() and (model_dir / "2" / "model.onnx").read_bytes() != before


def test_build_never_overwrites_without_force(repo):
    assert run_cli("build", "--repository", repo).returncode == 0
    assert_one_error_line(run_cli("build", "--repository", repo, "--version", "1"), "exists; pass --force")
    assert_one_error_line(
        run_cli("build", "--repository", repo, "--name", "mlp_3_4_1", "--sizes", "5,1"), "describes a different model"
    )


def test_build_columns_writes_triton_config_without_batch(repo):
    assert run_cli("build", "--repository", repo, "--layout", "columns", "--dtype", "float64").returncode == 0
    text = (repo / "mlp_3_4_1" / "config.pbtxt").read_text()
    config = text_format.Parse(text, ModelConfig())
    assert "max_batch_size: 0" in text and config.max_batch_size == 0  # written out: Triton would guess otherwise
    assert list(config.input[0].dims) == [3, -1] and config.input[0].data_type == DataType.TYPE_FP64


def test_build_from_weights_and_single_file_output(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "W1": rng.standard_normal((5, 2)),
        "b1": rng.standard_normal((5, 1)),
        "W2": rng.standard_normal((3, 5)),
        "b2": rng.standard_normal((3, 1)),
    }
    np.savez(tmp_path / "w.npz", **arrays)
    out = tmp_path / "net.onnx"
    result = run_cli(
        "build",
        "--weights",
        tmp_path / "w.npz",
        "--activations",
        "leaky_relu:0.1,linear",
        "--dtype",
        "float64",
        "--output",
        out,
    )
    assert result.returncode == 0, result.stderr
    back = read_file(out)
    assert back.spec.sizes == (2, 5, 3) and str(back.spec.activations[0]) == "leaky_relu:0.1"
    np.testing.assert_array_equal(back.spec.weights[1], arrays["W2"])
    assert_one_error_line(run_cli("build", "--weights", tmp_path / "w.npz", "--output", out), "exists; pass --force")


def test_build_help_lists_every_activation_and_dtype():
    help_text = " ".join(run_cli("build", "--help").stdout.split())  # unwrapped
    activations = help_text.split("--activations ACTIVATIONS")[-1].split("--init")[0]
    for name in ACTIVATIONS + tuple(ALIASES):
        assert re.search(rf"\b{name}\b", activations), f"--activations help leaves out {name}: {activations}"
    assert "softmax (output layer only, over 2 or more units)" in activations
    dtype = help_text.split("--dtype {")[-1].split("--opset")[0]
    for d in DTYPES:
        assert f"{d.name} ({d.datatype} on the wire" in dtype, dtype


def test_build_warns_about_hidden_sigmoid(repo):
    result = run_cli("build", "--repository", repo, "--activations", "sigmoid")
    assert result.returncode == 0
    assert "forwardpass: warning: layer 1 is hidden and uses sigmoid" in result.stderr


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["build", "--sizes", "3,x"], "expected comma-separated integers"),
        (["build", "--activations", "swish"], "unknown activation 'swish'"),
        (["build", "--activations", "relu,softmax"], "softmax over one output unit always answers 1; for two classes"),
        (["build", "--opset", "9"], "opset 9 is out of range"),
        (["build", "--layout", "diagonal"], "invalid choice: 'diagonal'"),
        (["build", "--weights", "missing.npz"], "missing.npz: no such file"),
        (["check", "missing.onnx"], "missing.onnx: no such file"),
        (["run", "missing.onnx", "--input", "x.csv"], "missing.onnx: no such file"),
        (["check", "models/mlp_3_4_1/1/model.onnx", "--provider", "cuda"], "onnxruntime-gpu"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["serve", "--port", "70000"], "--grpc-port 70000 is not a TCP port"),
        (["serve", "--http-port", "-1"], "--http-port -1 is not a TCP port"),
        (["serve", "--http-port", "8001"], "--http-port and --grpc-port are both 8001"),
        (["serve", "--workers", "0"], "--workers must be at least 1"),
        (["serve", "--threads", "-1"], "--threads must be 0 (its default for the repository) or more, got -1"),
        (["show", "missing.onnx"], "missing.onnx: no such file"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(repo, args, match):
    extra = ["--repository", repo] if args[0] == "build" else []
    result = run_cli(*args, *extra)
    if "--provider" in args and result.returncode == 0:
        pytest.skip("this machine runs CUDA")
    assert_one_error_line(result, match)


def test_check_a_committed_model():
    result = run_cli("check", "models/mlp_3_4_1/1/model.onnx")
    assert result.returncode == 0, result.stderr
    assert "onnx checker passed" in result.stdout and "provider: cpu" in result.stdout.replace("cuda", "cpu")
    assert result.stdout.count("within tolerance") == 3 and result.stdout.strip().endswith("ok")


def test_check_refuses_a_non_mlp(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="lonely")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "relu.onnx")
    assert_one_error_line(run_cli("check", tmp_path / "relu.onnx"), "node 'lonely' (op Relu): expected a Gemm")


@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_run_reads_and_writes_files(tmp_path, fmt):
    x = np.random.default_rng(0).standard_normal((6, 3))
    path = tmp_path / f"x.{fmt}"
    np.savetxt(path, x, delimiter=",") if fmt == "csv" else np.save(path, x)
    out = tmp_path / f"y.{fmt}"
    result = run_cli("run", "models/mlp_3_4_1/1/model.onnx", "--input", path, "--output", out)
    assert result.returncode == 0, result.stderr
    y = np.loadtxt(out, delimiter=",", ndmin=2) if fmt == "csv" else np.load(out)
    spec = read_file(ROOT / "models/mlp_3_4_1/1/model.onnx").spec
    X = x.T.astype(np.float32).astype(np.float64)
    assert y.shape == (6, 1) and compare(spec, X, y.T, "float32").ok


def test_run_prints_csv_to_stdout_for_a_columns_model(tmp_path):
    assert run_cli("build", "--repository", tmp_path, "--layout", "columns", "--name", "cols").returncode == 0
    X = np.arange(12, dtype=float).reshape(3, 4) / 10
    np.savetxt(tmp_path / "X.csv", X, delimiter=",")
    result = run_cli("run", tmp_path / "cols" / "1" / "model.onnx", "--input", tmp_path / "X.csv")
    assert result.returncode == 0, result.stderr
    Y = np.loadtxt(result.stdout.splitlines(), delimiter=",", ndmin=2)
    spec = read_file(tmp_path / "cols" / "1" / "model.onnx").spec
    np.testing.assert_allclose(Y, forward(spec, X).output, rtol=1e-6, atol=1e-7)


def test_run_with_the_wrong_width_or_format(tmp_path):
    np.savetxt(tmp_path / "x.csv", np.ones((2, 5)), delimiter=",")
    assert_one_error_line(
        run_cli("run", "models/mlp_3_4_1/1/model.onnx", "--input", tmp_path / "x.csv"),
        "input 'x' has shape (2, 5), expected (batch, 3)",
    )
    (tmp_path / "x.txt").write_text("1,2,3\n")
    assert_one_error_line(
        run_cli("run", "models/mlp_3_4_1/1/model.onnx", "--input", tmp_path / "x.txt"), "unknown format '.txt'"
    )
    (tmp_path / "bad.csv").write_text("1,2,three\n")
    assert_one_error_line(
        run_cli("run", "models/mlp_3_4_1/1/model.onnx", "--input", tmp_path / "bad.csv"), "cannot read it as .csv"
    )


def test_demo_prints_onnxruntime_beside_the_oracle():
    result = run_cli("demo", "--batch", "3")
    assert result.returncode == 0, result.stderr
    assert "onnxruntime y" in result.stdout and "oracle y" in result.stdout
    assert len(result.stdout.strip().splitlines()) == 5


def test_help_shows_defaults():
    out = run_cli("build", "--help").stdout
    assert "(default: rows)" in out and "(default: 17)" in out and "(default: 1048576)" in out


def test_infer_by_default_reaches_a_server_started_without_flags():
    serve = " ".join(run_cli("serve", "--help").stdout.split())
    infer = " ".join(run_cli("infer", "--help").stdout.split())
    host = re.search(r"--host HOST address to listen on \(default: (\S+)\)", serve)[1]
    port = re.search(r"--port GRPC_PORT gRPC port [^(]*\(Triton's default\)[^(]*\(default: (\d+)\)", serve)[1]
    assert f"HTTP/REST (default: {host}:{port})" in infer, infer


@pytest.fixture(scope="module")
def committed_models_server():
    server = ServerProcess(ROOT / "models", "--workers", "1")
    yield server
    assert server.stop() == 0


def test_infer_at_the_other_protocols_port_names_the_url_to_use(committed_models_server, tmp_path):
    """gRPC's own answer from an HTTP/1.x port is a dump of HTTP/2 frame parsing; the user needs the URL."""
    server = committed_models_server
    np.savetxt(tmp_path / "x.csv", np.ones((2, 3)), delimiter=",")
    http_port = server.http_url.rsplit(":", 1)[1]
    at_http = run_cli("infer", "--url", f"127.0.0.1:{http_port}", "--model", "mlp_3_4_1", "--input", tmp_path / "x.csv")
    assert_one_error_line(at_http, f"is an HTTP/REST port; use --url http://127.0.0.1:{http_port}")
    at_grpc = run_cli("infer", "--url", f"http://{server.url}", "--model", "mlp_3_4_1", "--input", tmp_path / "x.csv")
    assert_one_error_line(at_grpc, f"is a gRPC port; use --url {server.url}")
    right = run_cli(
        "infer", "--url", f"http://127.0.0.1:{http_port}", "--model", "mlp_3_4_1", "--input", tmp_path / "x.csv"
    )
    assert right.returncode == 0 and len(right.stdout.split()) == 2, right.stderr
