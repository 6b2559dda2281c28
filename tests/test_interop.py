"""The exported files in runtimes other than onnxruntime, against the oracle.

Each runtime is optional here and skipped, with the reason, where it is not installed; CI installs
them all. What a runtime cannot do is asserted as such (strict xfail), so the matrix stays honest.
"""

import numpy as np
import pytest

from forwardpass.builder.readback import read_file
from forwardpass.builder.spec import ACTIVATIONS, OUTPUT_ONLY, Activation
from forwardpass.tolerance import compare

import runtimes
from helpers import ROOT, assert_matches_oracle, feed, model_bytes, random_input, random_spec, unfeed

OTHERS = ("reference", "openvino", "tract", "onnxruntime-node")
COMMITTED = ("mlp_3_4_1", "mlp_3_4_1_sigmoid")
CANNOT = {  # (runtime, dtype) it refuses, as observed
    ("tract", "float64"): "tract runs Gemm in float32 only (tensor is F32, accessed as F64)",
}
LOWER = {  # (runtime, dtype) it runs at a lower precision, as observed: the mode it meets instead
    ("openvino", "float64"): "float32",  # the CPU plugin computes a float64 model in float32
}


def require(runtime: str) -> None:
    reason = runtimes.missing(runtime)
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("runtime", OTHERS)
@pytest.mark.parametrize("model", COMMITTED)
def test_committed_models_agree_with_the_oracle(runtime, model):
    require(runtime)
    path = ROOT / "models" / model / "1" / "model.onnx"
    spec = read_file(path).spec
    X = random_input(np.random.default_rng(0), 3, 64, "float32")
    assert_matches_oracle(spec, X, runtimes.run(runtime, path, X.T).T, "float32")


@pytest.mark.parametrize("runtime", OTHERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_random_networks_agree_with_the_oracle(tmp_path, runtime, activation, layout, dtype):
    require(runtime)
    if (runtime, dtype) in CANNOT:
        pytest.xfail(CANNOT[runtime, dtype])  # the run below is skipped; the _fails test proves it fails
    act = Activation(activation, 0.2 if activation == "leaky_relu" else None)
    hidden = Activation("tanh") if activation in OUTPUT_ONLY else act
    spec = random_spec(np.random.default_rng(1), (3, 5, 4), (hidden, act), scale=2.0)
    path = tmp_path / "model.onnx"
    path.write_bytes(model_bytes(spec, layout=layout, dtype=dtype))
    X = random_input(np.random.default_rng(2), 3, 33, dtype)
    out = runtimes.run(runtime, path, feed(X, layout))
    assert out.dtype == np.dtype(dtype), f"{runtime} answered {out.dtype} for a {dtype} model"
    assert_matches_oracle(spec, X, unfeed(out, layout), LOWER.get((runtime, dtype), dtype))


@pytest.mark.parametrize(("runtime", "dtype"), sorted(CANNOT))
def test_what_a_runtime_cannot_run_still_fails(tmp_path, runtime, dtype):
    require(runtime)
    spec = random_spec(np.random.default_rng(3), (3, 4, 1), (Activation("relu"), Activation("sigmoid")))
    path = tmp_path / "model.onnx"
    path.write_bytes(model_bytes(spec, dtype=dtype))
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; a silent answer would not
        runtimes.run(runtime, path, random_input(np.random.default_rng(4), 3, 5, dtype).T)


@pytest.mark.parametrize(("runtime", "dtype"), sorted(LOWER))
def test_what_a_runtime_runs_at_lower_precision_misses_the_higher_bound(tmp_path, runtime, dtype):
    require(runtime)
    spec = random_spec(np.random.default_rng(6), (3, 8, 2), (Activation("tanh"), Activation("identity")))
    path = tmp_path / "model.onnx"
    path.write_bytes(model_bytes(spec, dtype=dtype))
    X = random_input(np.random.default_rng(7), 3, 64, dtype)
    out = runtimes.run(runtime, path, X.T).T
    assert not compare(spec, X, out, dtype).ok  # if this starts to pass, LOWER and the README are stale


def test_openvino_default_precision_is_within_the_bf16_bound(tmp_path):
    require("openvino")
    path = ROOT / "models" / "mlp_3_4_1" / "1" / "model.onnx"
    spec = read_file(path).spec
    X = random_input(np.random.default_rng(5), 3, 256, "float32")
    assert_matches_oracle(spec, X, runtimes.run("openvino-bf16", path, X.T).T, "bf16")
