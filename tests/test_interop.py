"""The exported files in runtimes other than onnxruntime, against the oracle.

Each runtime is optional here and skipped, with the reason, where it is not installed; CI installs
them all. What a runtime cannot do is asserted as such (strict xfail), so the matrix stays honest.
"""

import re
from dataclasses import dataclass

import numpy as np
import pytest

from forwardpass.builder.readback import read_file
from forwardpass.builder.spec import ACTIVATIONS, OUTPUT_ONLY, Activation
from forwardpass.tolerance import compare

import runtimes
from harness import ROOT, missing_tool
from numerics import assert_matches_oracle, feed, model_bytes, random_input, random_spec, unfeed


def tract_error() -> type[Exception]:
    """tract's own error type; where tract is not installed its tests skip before anything raises."""
    try:
        from tract import TractError
    except ImportError:
        return Exception
    return TractError


@dataclass(frozen=True)
class Refusal:
    """How a runtime refuses a model: the error it raises, a pattern of its message, and why."""

    error: type[Exception]
    match: str
    reason: str


OTHERS = ("reference", "openvino", "tract", "onnxruntime-node")
DTYPES = ("float32", "float64")
COMMITTED = ("mlp_3_4_1", "mlp_3_4_1_sigmoid")
CANNOT = {  # (runtime, dtype) it refuses, as observed
    ("tract", "float64"): Refusal(
        tract_error(),
        re.escape("tensor is F32, accessed as F64"),
        # its error names the node: "Eager eval "Z1.beta_c" Mul during optimisation" of a float64 bias
        "tract imports Gemm's beta as a float32 constant, then cannot multiply the float64 bias by it",
    ),
}
LOWER = {  # (runtime, dtype) it runs at a lower precision, as observed: the mode it meets instead
    ("openvino", "float64"): "float32",  # the CPU plugin computes a float64 model in float32
}


def require(runtime: str) -> None:
    reason = runtimes.missing(runtime)
    if reason:
        missing_tool(reason)


@pytest.mark.parametrize("runtime", OTHERS)
@pytest.mark.parametrize("model", COMMITTED)
def test_committed_models_agree_with_the_oracle(runtime, model):
    require(runtime)
    path = ROOT / "models" / model / "1" / "model.onnx"
    spec = read_file(path).spec
    X = random_input(np.random.default_rng(0), 3, 64, "float32")
    assert_matches_oracle(spec, X, runtimes.run(runtime, path, X.T).T, "float32")


def runtime_and_dtype() -> list:
    """Every (runtime, dtype), those in CANNOT marked to fail as they do: strict, so a fix shows."""
    pairs = []
    for runtime in OTHERS:
        for dtype in DTYPES:
            refusal = CANNOT.get((runtime, dtype))
            marks = [pytest.mark.xfail(strict=True, raises=refusal.error, reason=refusal.reason)] if refusal else []
            pairs.append(pytest.param(runtime, dtype, marks=marks))
    return pairs


@pytest.mark.parametrize(("runtime", "dtype"), runtime_and_dtype())
@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_random_networks_agree_with_the_oracle(tmp_path, runtime, activation, layout, dtype):
    require(runtime)
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
    refusal = CANNOT[runtime, dtype]
    with pytest.raises(refusal.error, match=refusal.match):
        runtimes.run(runtime, path, random_input(np.random.default_rng(4), 3, 5, dtype).T)


@pytest.mark.parametrize(("runtime", "dtype"), sorted(LOWER))
def test_what_a_runtime_runs_at_lower_precision_misses_the_higher_bound(tmp_path, runtime, dtype):
    require(runtime)
    spec = random_spec(np.random.default_rng(6), (3, 8, 2), (Activation("tanh"), Activation("identity")))
    path = tmp_path / "model.onnx"
    path.write_bytes(model_bytes(spec, dtype=dtype))
    X = random_input(np.random.default_rng(7), 3, 64, dtype)
    out = runtimes.run(runtime, path, X.T).T
    assert not compare(spec, X, out, dtype).ok  # if this starts to pass, LOWER and docs/runtimes.md are stale


def test_openvino_default_precision_is_within_the_bf16_bound(tmp_path):
    require("openvino")
    path = ROOT / "models" / "mlp_3_4_1" / "1" / "model.onnx"
    spec = read_file(path).spec
    X = random_input(np.random.default_rng(5), 3, 256, "float32")
    assert_matches_oracle(spec, X, runtimes.run("openvino-bf16", path, X.T).T, "bf16")
