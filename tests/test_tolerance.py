"""The tolerance is tight enough to fail what must fail."""

import numpy as np
import pytest

from forwardpass.builder.spec import Activation
from forwardpass.runtime import Runtime
from forwardpass.tolerance import TOLERANCES, compare

from helpers import feed, model_bytes, random_input, random_spec, unfeed

ACTS = (Activation("relu"), Activation("tanh"), Activation("sigmoid"))


def test_every_mode_states_its_reason():
    assert set(TOLERANCES) == {"float64", "float32", "tf32", "bf16"}
    units = [TOLERANCES[m].unit for m in ("float64", "float32", "tf32", "bf16")]
    assert units == sorted(units) and all(TOLERANCES[m].reason for m in TOLERANCES)


def test_float64_model_computed_in_float32_fails_the_float64_bound():
    rng = np.random.default_rng(0)
    spec = random_spec(rng, (3, 16, 8, 1), ACTS)
    X = random_input(rng, 3, 256, "float32").astype(np.float64)
    quietly_float32 = Runtime(model_bytes(spec, dtype="float32"), provider="cpu").predict(
        feed(X.astype(np.float32), "rows")
    )
    assert compare(spec, X, unfeed(quietly_float32, "rows"), "float32").ok
    assert not compare(spec, X, unfeed(quietly_float32, "rows"), "float64").ok


def test_a_bias_broadcast_along_the_wrong_axis_fails():
    rng = np.random.default_rng(1)
    spec = random_spec(rng, (3, 4, 4), (Activation("relu"), Activation("identity")))
    X = random_input(rng, 3, 4, "float64")
    right = spec.weights[1] @ np.maximum(spec.weights[0] @ X + spec.biases[0], 0) + spec.biases[1]
    wrong = spec.weights[1] @ np.maximum(spec.weights[0] @ X + spec.biases[0].T, 0) + spec.biases[1].T
    assert compare(spec, X, right, "float64").ok
    assert not compare(spec, X, wrong, "float32").ok


def test_nan_never_passes():
    rng = np.random.default_rng(2)
    spec = random_spec(rng, (2, 1), (Activation("identity"),))
    X = random_input(rng, 2, 3, "float64")
    out = spec.weights[0] @ X + spec.biases[0]
    out[0, 1] = np.nan
    assert not compare(spec, X, out, "bf16").ok


def test_tf32_error_fits_the_tf32_bound_but_not_float32():
    # Emulate TF32: round Gemm inputs to 10 stored mantissa bits, sum in float32.
    def tf32(a):
        bits = np.asarray(a, np.float32).view(np.uint32)
        return ((bits + 0x1000) & 0xFFFFE000).view(np.float32)

    rng = np.random.default_rng(3)
    spec = random_spec(rng, (64, 64, 1), (Activation("relu"), Activation("identity")))
    X = random_input(rng, 64, 512, "float32")
    A = X
    for W, b, act in zip(spec.weights, spec.biases, spec.activations):
        Z = tf32(W) @ tf32(A) + b.astype(np.float32)
        A = np.maximum(Z, 0) if act.name == "relu" else Z
    assert compare(spec, X, A, "tf32").ok
    assert not compare(spec, X, A, "float32").ok


@pytest.mark.parametrize("mode", sorted(TOLERANCES))
def test_the_oracle_itself_is_within_every_bound(mode):
    rng = np.random.default_rng(4)
    spec = random_spec(rng, (5, 7, 3), (Activation("leaky_relu"), Activation("sigmoid")))
    X = random_input(rng, 5, 11, "float64")
    from forwardpass.builder.oracle import forward

    result = compare(spec, X, forward(spec, X).output, mode)
    assert result.ok and result.max_abs == 0.0


def test_softmax_bound_stays_finite_when_input_errors_are_huge():
    # Weights of 1e6 give logits far apart: some probabilities underflow to exactly 0, and the bound
    # of the logits is so large that e^2m overflows. The bound must still be a number (capped at 1).
    from forwardpass.builder.oracle import forward
    from forwardpass.builder.spec import NetworkSpec

    spec = NetworkSpec((2, 3), (Activation("softmax"),), ([[1e6, -1e6], [-1e6, 1e6], [0.0, 0.0]],), ([[0], [0], [0]],))
    X = np.array([[1e30, -1e30], [-1e30, 1e30]])
    expected = forward(spec, X).output
    assert (expected == 0).any()
    result = compare(spec, X, expected, "float32")
    assert result.ok and np.isfinite(result.worst)
