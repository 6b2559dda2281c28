"""Seeded weight initializers, as the course gives them: W random, b zeros.

NumPy does not promise the same random stream across versions, so a seed reproduces weights on
one NumPy only; committed models are rebuilt from their saved `.npz`, never from a seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forwardpass.errors import SpecError

from .spec import Activation, NetworkSpec, check_sizes

# The factor that multiplies standard normal draws for W[l], given n_{l-1}.
SCALES = {
    "small": lambda fan_in: 0.01,  # the slides' randn * 0.01
    "he": lambda fan_in: np.sqrt(2.0 / fan_in),  # suits relu layers
    "xavier": lambda fan_in: np.sqrt(1.0 / fan_in),  # suits tanh layers
}


def initialize(
    sizes: Sequence[int], activations: Sequence[Activation], method: str = "he", seed: int = 0
) -> NetworkSpec:
    """A spec whose W[l] are seeded normal draws scaled by `method` and whose b[l] are zeros."""
    if method not in SCALES:
        raise SpecError(f"unknown initializer {method!r}; known: {', '.join(SCALES)}")
    sizes = check_sizes(sizes)
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weights.append(rng.standard_normal((fan_out, fan_in)) * SCALES[method](fan_in))
        biases.append(np.zeros((fan_out, 1)))
    return NetworkSpec(sizes, tuple(activations), tuple(weights), tuple(biases))
