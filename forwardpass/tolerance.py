"""How far a runtime may stray from the float64 oracle, stated once per dtype and precision mode.

A fixed atol/rtol either fails deep ReLU networks with large values or waves through a float64
model that quietly ran in float32. So the allowance is the classic forward error bound of the
forward pass, scaled by the unit roundoff u of the arithmetic:

    |fl(W a + b) - (W a + b)| <= (n + 2) u (|W| |a| + |b|)        per Gemm with n inputs,

carried through the layers (each activation is Lipschitz: 1/4 for sigmoid, 1 for the others, alpha
at most 1 in practice for leaky ReLU; softmax scales each output by at most e^2m when its column's
inputs are off by m) plus the activation's own rounding, which for softmax grows with the number
of units it sums over (`_softmax_rounding`). The bound is computed in float64 from the same spec
and input, elementwise, so it is tight where values are small and loose only where the arithmetic
itself is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from forwardpass.builder.oracle import Forward, forward
from forwardpass.builder.spec import NetworkSpec


@dataclass(frozen=True)
class Tolerance:
    """The unit roundoff u of one arithmetic, and why it is that number."""

    mode: str
    unit: float
    reason: str


TOLERANCES = {
    t.mode: t
    for t in (
        Tolerance("float64", 2.0**-53, "IEEE double: inputs, weights and every sum round to 53 bits"),
        Tolerance("float32", 2.0**-24, "IEEE single: inputs, weights and every sum round to 24 bits"),
        Tolerance("tf32", 2.0**-11, "TF32 Gemm (CUDA's default): products of 11-bit inputs, sums in float32"),
        Tolerance("bf16", 2.0**-8, "bfloat16 (OpenVINO's CPU default where the processor has it): 8 bits"),
    )
}

# sigmoid, tanh and softmax's exp are computed by approximations (onnxruntime's MLAS, for one)
# accurate to a few units in the last place of values in [-1, 1]: allow 8 u for their own rounding.
APPROXIMATED_ULPS = 8.0


@dataclass(frozen=True)
class Comparison:
    """A runtime's output against the oracle's, and whether it is within the bound."""

    max_abs: float
    max_rel: float
    worst: float  # max of |error| / bound: at most 1 when within tolerance
    ok: bool


def layer_bounds(spec: NetworkSpec, X: np.ndarray, unit: float, oracle: Forward | None = None) -> tuple[list, list]:
    """Elementwise error bounds (columns) for every Z[l] and A[l]; index 0 is the input."""
    oracle = oracle or forward(spec, X)
    err_A = [unit * np.abs(oracle.A[0])]  # the input itself rounded to the runtime's dtype
    err_Z = [None]
    for l, (W, b, act) in enumerate(zip(spec.weights, spec.biases, spec.activations), 1):
        absW = np.abs(W)
        carried = absW @ err_A[-1]
        terms = absW @ np.abs(oracle.A[l - 1]) + np.abs(b)
        err_Z.append(carried + (spec.sizes[l - 1] + 2) * unit * (terms + carried))
        err_A.append(error_through(act.name, act.alpha, err_Z[-1], np.abs(oracle.A[l]), unit))
    return err_Z, err_A


def compare(spec: NetworkSpec, X: np.ndarray, actual: np.ndarray, mode: str, layer: str | None = None) -> Comparison:
    """Compare a runtime's output for X (both in columns) to the oracle, under `mode`'s bound.

    `layer` picks a hidden output ('Z2', 'A1'); by default the network's output.
    """
    tolerance = TOLERANCES[mode]
    oracle = forward(spec, X)
    err_Z, err_A = layer_bounds(spec, X, tolerance.unit, oracle)
    kind, index = (layer[0], int(layer[1:])) if layer else ("A", spec.depth)
    expected = (oracle.Z if kind == "Z" else oracle.A)[index]
    bound = (err_Z if kind == "Z" else err_A)[index]
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"output has shape {actual.shape}, the oracle's is {expected.shape}")
    error = np.abs(actual - expected)
    error = np.where(np.isnan(actual), np.inf, error)  # NaN must never pass
    tiny = np.finfo(np.float64).tiny
    return Comparison(
        max_abs=float(error.max(initial=0.0)),
        max_rel=float((error / np.maximum(np.abs(expected), tiny)).max(initial=0.0)),
        worst=float((error / np.maximum(bound, tiny)).max(initial=0.0)),
        ok=bool(np.all(error <= bound)),
    )


def error_through(name: str, alpha: float | None, err_z: np.ndarray, abs_a: np.ndarray, unit: float) -> np.ndarray:
    """The error of A = g(Z) given Z's error: g's slope times it, plus g's own rounding.

    An activation without an entry in ERROR_THROUGH raises: treating it as exact would pass anything.
    """
    try:
        rule = ERROR_THROUGH[name]
    except KeyError:
        raise ValueError(f"no error bound for activation {name!r}: add it to tolerance.ERROR_THROUGH") from None
    return rule(err_z, abs_a, unit, alpha)


def _sigmoid(err_z: np.ndarray, abs_a: np.ndarray, unit: float, alpha: float | None) -> np.ndarray:
    return 0.25 * err_z + APPROXIMATED_ULPS * unit


def _tanh(err_z: np.ndarray, abs_a: np.ndarray, unit: float, alpha: float | None) -> np.ndarray:
    return err_z + APPROXIMATED_ULPS * unit


def _exact(err_z: np.ndarray, abs_a: np.ndarray, unit: float, alpha: float | None) -> np.ndarray:
    return err_z  # relu and identity pass their input through or zero it: no rounding of their own


def _leaky_relu(err_z: np.ndarray, abs_a: np.ndarray, unit: float, alpha: float | None) -> np.ndarray:
    return max(1.0, abs(alpha)) * err_z + unit * abs_a  # one multiply on the negative side


def _softmax(err_z: np.ndarray, abs_a: np.ndarray, unit: float, alpha: float | None) -> np.ndarray:
    # Inputs off by at most m in a column scale each output by between e^-2m and e^2m; and a
    # probability cannot be off by more than 1, however large m is.
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = abs_a * np.expm1(2 * err_z.max(axis=0, keepdims=True))
    scaled = np.where(np.isnan(scaled), 1.0, scaled)  # 0 * inf: an unbounded spread, so the cap
    return np.minimum(scaled + _softmax_rounding(abs_a, unit), 1.0) + APPROXIMATED_ULPS * unit


def _softmax_rounding(p: np.ndarray, unit: float) -> np.ndarray:
    """Softmax's own rounding for the exact probabilities p (columns), which grows with the units n.

    A runtime computes, per column (onnxruntime's MLAS does exactly this, dividing as 1/S times e_i):
        M = max_j z_j          exact
        d_i = fl(z_i - M)      one rounding: exp(d_i) is off by a factor e^(|d_i| u), |d_i| u to first order
        e_i = fl(exp(d_i))     exp's own error, E = APPROXIMATED_ULPS ulps relative
        S = fl(sum_j e_j)      n positive terms: gamma_(n-1) = (n-1)u / (1 - (n-1)u) relative, in any
                               order; their own errors weigh in by their share, sum_j p_j (E + |d_j|) u
        p_i = fl(e_i / S)      2u: a reciprocal and a multiply, or one division
    so to first order in u, relative to p_i,
        |p_i' - p_i| / p_i <= (2E + 2 + |d_i| + sum_j p_j |d_j|) u + gamma_(n-1)
    where |d_i| = ln(p_max / p_i) comes from the probabilities themselves. gamma_(n-1) is the term that
    grows with the width (pairwise or blocked sums do better, but no runtime promises its order).
    p_i |d_i| -> 0 as p_i -> 0, so a term that underflows adds nothing.
    """
    n = p.shape[0]
    if (n - 1) * unit >= 1:
        return np.full_like(p, np.inf)  # the sum may be off by as much as itself: only the cap holds
    with np.errstate(divide="ignore", invalid="ignore"):
        # p_i |d_i|, as a difference of logs: the ratio p_max / p_i overflows for subnormal p_i
        shifted = np.where(p > 0, p * (np.log(p.max(axis=0, keepdims=True)) - np.log(p)), 0.0)
    summed = (n - 1) * unit / (1 - (n - 1) * unit)
    relative = (2 * APPROXIMATED_ULPS + 2) * unit + summed + unit * shifted.sum(axis=0, keepdims=True)
    return p * relative + unit * shifted


# How each activation carries Z's error into A, by name: one entry per name in spec.ACTIVATIONS.
ERROR_THROUGH: dict[str, Callable[[np.ndarray, np.ndarray, float, float | None], np.ndarray]] = {
    "sigmoid": _sigmoid,
    "tanh": _tanh,
    "relu": _exact,
    "leaky_relu": _leaky_relu,
    "identity": _exact,
    "softmax": _softmax,
}
