"""The committed model repository: what it holds, and that `make models` rebuilds it byte for byte."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from forwardpass.builder.readback import read_file
from forwardpass.protos.model_config_pb2 import ModelConfig
from forwardpass.runtime import Runtime

from harness import need_tool
from numerics import assert_matches_oracle, random_input, reference_run

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"mlp_3_4_1": ("relu", "sigmoid"), "mlp_3_4_1_sigmoid": ("sigmoid", "sigmoid")}
FILES = ("1/model.onnx", "1/weights.npz", "config.pbtxt")


def test_make_models_rebuilds_the_committed_bytes(tmp_path):
    need_tool("make", "make")
    command = [
        "make",
        "-s",
        "-o",
        ".venv/.installed",
        "models",
        f"MODEL_REPO={tmp_path}",
        f"FP={sys.executable} -m forwardpass",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in MODELS:
        for file in FILES:
            assert (tmp_path / name / file).read_bytes() == (ROOT / "models" / name / file).read_bytes(), (
                f"{name}/{file}"
            )


def test_a_built_repository_is_readable_by_the_servers_user(tmp_path):
    """A container serves the repository as uid 1000: the atomic writes must not keep mkstemp's 0600."""
    from forwardpass.builder.export import export_to_repository
    from forwardpass.builder.graph import ExportOptions

    spec = read_file(ROOT / "models" / "mlp_3_4_1" / "1" / "model.onnx").spec
    mask = os.umask(0o022)  # the usual one: files 0644
    try:
        export_to_repository(spec, ExportOptions(), tmp_path, "m", 1, force=True)
    finally:
        os.umask(mask)
    assert {file: oct((tmp_path / "m" / file).stat().st_mode & 0o777) for file in FILES} == dict.fromkeys(
        FILES, "0o644"
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_committed_model_is_the_slides_network(name):
    back = read_file(ROOT / "models" / name / "1" / "model.onnx")
    assert back.spec.sizes == (3, 4, 1)
    assert tuple(a.name for a in back.spec.activations) == MODELS[name]
    assert (back.layout, back.dtype, back.opset) == ("rows", "float32", 17)
    X = random_input(np.random.default_rng(0), 3, 500, "float32")
    path = ROOT / "models" / name / "1" / "model.onnx"
    assert_matches_oracle(back.spec, X, Runtime(path, provider="cpu").predict(X.T).T, "float32")
    assert_matches_oracle(back.spec, X, reference_run(path.read_bytes(), np.ascontiguousarray(X.T))[0].T, "float32")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_committed_config_names_the_model_and_its_limits(name):
    config = text_format.Parse((ROOT / "models" / name / "config.pbtxt").read_text(), ModelConfig())
    assert (config.name, config.platform, config.max_batch_size) == (name, "onnxruntime_onnx", 1_048_576)
    assert [list(t.dims) for t in (*config.input, *config.output)] == [[3], [1]]
