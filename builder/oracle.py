"""The slides' forward pass in NumPy, float64, on columns: the ground truth for every runtime.

    Z[l] = W[l] A[l-1] + b[l]        A[0] = X, of shape (n_x, m)
    A[l] = g[l](Z[l])

It reads a NetworkSpec and nothing else: no ONNX, no graph code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from forwardpass.errors import InputError

from .spec import Activation, NetworkSpec


def sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-z) overflows to inf for z << 0, and 1/inf is the right 0
        return 1.0 / (1.0 + np.exp(-z))


def tanh(z: np.ndarray) -> np.ndarray:
    return np.tanh(z)  # (e^z - e^-z) / (e^z + e^-z), without overflow for large |z|


def relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, z)


def leaky_relu(z: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(z >= 0, z, alpha * z)


def identity(z: np.ndarray) -> np.ndarray:
    return z


def softmax(z: np.ndarray) -> np.ndarray:
    """exp(z_i) / sum_j exp(z_j) over the units of each column; shifted by the max, which cancels."""
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


# One function per name in spec.ACTIVATIONS; leaky_relu alone takes a parameter, its alpha.
FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "identity": identity,
    "softmax": softmax,
}


def g(activation: Activation, z: np.ndarray) -> np.ndarray:
    """Apply one layer's activation."""
    parameters = () if activation.alpha is None else (activation.alpha,)
    return FUNCTIONS[activation.name](z, *parameters)


@dataclass(frozen=True)
class Forward:
    """Every Z[l] and A[l] of one pass; index 0 of A is X, index 0 of Z is unused (None)."""

    Z: list
    A: list

    @property
    def output(self) -> np.ndarray:
        """A[L], the network's prediction, shape (n_L, m)."""
        return self.A[-1]


def forward(spec: NetworkSpec, X: np.ndarray) -> Forward:
    """Run the slides' equations on X of shape (n_0, m), in float64."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != spec.sizes[0]:
        raise InputError(f"oracle input X has shape {X.shape}, expected ({spec.sizes[0]}, m)")
    Z, A = [None], [X]
    for W, b, activation in zip(spec.weights, spec.biases, spec.activations):
        Z.append(W @ A[-1] + b)
        A.append(g(activation, Z[-1]))
    return Forward(Z, A)
