"""The tolerance is tight enough to fail what must fail."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwardpass.builder.spec import Activation, NetworkSpec
from forwardpass.runtime import Runtime
from forwardpass.tolerance import TOLERANCES, compare, error_through

from numerics import assert_matches_oracle, feed, model_bytes, random_input, random_spec, unfeed

ACTS = (Activation("relu"), Activation("tanh"), Activation("sigmoid"))
CLASSIFIER = (Activation("relu"), Activation("softmax"))
WIDE = (2000, 20000)  # output units: where a fixed allowance for softmax's own rounding fell short


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


def wide_classifier(units: int) -> NetworkSpec:
    """A 3-4-units relu,softmax network whose class 0 starts ln(units - 1) above the others, which are
    all equal: p_0 = 1/2 at x_0 = 0, rising to about 0.56 at x_0 = 1, and the rest share the remainder.

    Equal terms make the runtime's sum round the same way again and again, its worst case."""
    W1 = np.vstack([np.eye(3), np.zeros((1, 3))])
    W2 = np.zeros((units, 4))
    W2[0, 0] = 0.25  # relu(x_0) lifts class 0, so each column has a slightly different split
    lead = np.log(units - 1)
    b2 = np.full((units, 1), -lead / 2)
    b2[0] = lead / 2
    return NetworkSpec((3, 4, units), CLASSIFIER, (W1, W2), (np.zeros((4, 1)), b2))


def wide_input() -> np.ndarray:
    X = np.zeros((3, 256))
    X[0] = np.linspace(0.0, 1.0, 256)
    return X.astype(np.float32).astype(np.float64)


def softmax_summed_in_order(z: np.ndarray) -> np.ndarray:
    """Softmax in z's dtype with the sum taken one term after another, the order that rounds worst."""
    e = np.exp(z - z.max(axis=0))
    return e * (1 / np.add.accumulate(e, axis=0)[-1])


@pytest.mark.parametrize("units", WIDE)
def test_a_wide_softmax_from_onnxruntime_is_within_the_bound_and_uses_some_of_it(units):
    spec, X = wide_classifier(units), wide_input()
    out = Runtime(model_bytes(spec, dtype="float32"), provider="cpu").predict(feed(X.astype(np.float32), "rows"))
    result = compare(spec, X, unfeed(out, "rows"), "float32")
    assert result.ok, result
    assert result.worst > 0.01, f"the bound is loose: the worst error uses only {result.worst:.2%} of it"


@pytest.mark.parametrize("units", WIDE)
def test_a_wide_softmax_summed_term_by_term_in_float32_is_within_the_bound(units):
    spec, X = wide_classifier(units), wide_input()
    W1, W2 = (w.astype(np.float32) for w in spec.weights)
    b1, b2 = (b.astype(np.float32) for b in spec.biases)
    out = softmax_summed_in_order(W2 @ np.maximum(W1 @ X.astype(np.float32) + b1, 0) + b2)
    result = compare(spec, X, out, "float32")
    assert result.ok, result
    assert result.worst > 0.25, f"the worst summation order uses only {result.worst:.2%} of the bound"


def test_softmax_allowance_grows_with_the_units_it_sums():
    def allowance(units):
        p = np.full((units, 1), 0.5 / (units - 1))
        p[0] = 0.5
        return error_through("softmax", None, np.zeros_like(p), p, TOLERANCES["float32"].unit)[0, 0]

    assert allowance(20000) > 5 * allowance(2000) > 25 * allowance(200)


def test_softmax_bound_is_the_cap_when_its_sum_may_be_off_by_as_much_as_itself():
    unit = TOLERANCES["bf16"].unit
    p = np.full((300, 2), 1 / 300)  # 299 additions at 2^-8 each: the sum's relative error may exceed 1
    assert np.all(error_through("softmax", None, np.zeros_like(p), p, unit) == 1.0 + 8 * unit)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.tuples(st.integers(1, 8), st.integers(1, 16), st.integers(65, 20000)),
    lead=st.floats(0.0, 1.5),
    seed=st.integers(0, 2**32 - 1),
    layout=st.sampled_from(["rows", "columns"]),
    dtype=st.sampled_from(["float32", "float64"]),
    m=st.integers(1, 64),
)
def test_random_wide_classifiers_match_the_oracle(sizes, lead, seed, layout, dtype, m):
    rng = np.random.default_rng(seed)
    spec = random_spec(rng, sizes, CLASSIFIER)
    b2 = spec.biases[1].copy()
    b2[0] += lead * np.log(sizes[-1])  # from no favourite class to one that takes most of the mass
    spec = NetworkSpec(spec.sizes, spec.activations, spec.weights, (spec.biases[0], b2))
    X = random_input(rng, sizes[0], m, dtype)
    out = Runtime(model_bytes(spec, layout=layout, dtype=dtype), provider="cpu").predict(feed(X, layout))
    assert_matches_oracle(spec, X, unfeed(out, layout), dtype)
