"""The network description: layer sizes, one activation per layer, and the slides' W[l] and b[l].

One `NetworkSpec` feeds both the graph builder and the NumPy oracle. Weights are stored exactly as
the slides write them: W[l] has shape (n_l, n_{l-1}) and b[l] has shape (n_l, 1), in float64.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

import numpy as np

from forwardpass.errors import SpecError

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "identity", "softmax")
OUTPUT_ONLY = ("softmax",)  # over the output units: a distribution over classes, for classifiers
ALIASES = {"linear": "identity"}
DEFAULT_LEAKY_ALPHA = 0.01  # the slides' slope for z < 0
SATURATING = ("sigmoid", "tanh")  # the slides: "don't be used except for output"


@dataclass(frozen=True)
class Activation:
    """One layer's g: a name from ACTIVATIONS, and alpha for leaky_relu."""

    name: str
    alpha: float | None = None

    def __post_init__(self) -> None:
        name = ALIASES.get(self.name, self.name)
        if name not in ACTIVATIONS:
            known = ", ".join(ACTIVATIONS + tuple(ALIASES))
            raise SpecError(f"unknown activation {self.name!r}; known: {known}")
        object.__setattr__(self, "name", name)
        if name != "leaky_relu":
            if self.alpha is not None:
                raise SpecError(f"activation {name!r} takes no alpha (got {self.alpha})")
            return
        alpha = DEFAULT_LEAKY_ALPHA if self.alpha is None else float(self.alpha)
        if not np.isfinite(alpha):
            raise SpecError(f"leaky_relu alpha must be finite, got {alpha}")
        # ONNX stores the LeakyRelu attribute as float32; rounding here makes the oracle compute
        # the very function the graph computes, so float64 models can be held to float64 tolerance.
        object.__setattr__(self, "alpha", float(np.float32(alpha)))

    @classmethod
    def parse(cls, text: str) -> Activation:
        """Read 'relu', 'linear' or 'leaky_relu:0.2' (alpha after a colon)."""
        name, _, alpha = text.strip().partition(":")
        if not alpha:
            return cls(name)
        try:
            return cls(name, float(alpha))
        except ValueError:
            raise SpecError(f"activation {text!r}: alpha {alpha!r} is not a number") from None

    def to_json(self) -> str | dict:
        """The name, or {name, alpha} for leaky_relu."""
        return self.name if self.alpha is None else {"name": self.name, "alpha": self.alpha}

    def __str__(self) -> str:
        return self.name if self.alpha is None else f"{self.name}:{self.alpha:g}"


@dataclass(frozen=True, eq=False)
class NetworkSpec:
    """Sizes n_0..n_L, activations g[1]..g[L], and weights W[1..L], b[1..L] (float64, read-only)."""

    sizes: tuple[int, ...]
    activations: tuple[Activation, ...]
    weights: tuple[np.ndarray, ...] = field(repr=False)
    biases: tuple[np.ndarray, ...] = field(repr=False)

    def __post_init__(self) -> None:
        sizes = check_sizes(self.sizes)
        object.__setattr__(self, "sizes", sizes)
        acts = tuple(a if isinstance(a, Activation) else Activation.parse(a) for a in self.activations)
        if len(acts) != len(sizes) - 1:
            raise SpecError(f"{len(sizes) - 1} layers need {len(sizes) - 1} activations, got {len(acts)}")
        object.__setattr__(self, "activations", acts)
        for l, act in enumerate(acts[:-1], 1):
            if act.name in OUTPUT_ONLY:
                raise SpecError(f"layer {l} is hidden: {act.name} is an output-only activation")
        if acts[-1].name == "softmax" and sizes[-1] == 1:
            # softmax normalises over the output units: over one unit it is 1 whatever the input
            raise SpecError(
                f"layer {len(acts)}: softmax over one output unit always answers 1; for two classes use "
                "sigmoid over one unit (the probability of the second class), or softmax over two units"
            )
        if len(self.weights) != self.depth or len(self.biases) != self.depth:
            raise SpecError(
                f"{self.depth} layers need {self.depth} W and b, got {len(self.weights)} W and {len(self.biases)} b"
            )
        weights = tuple(self._checked(f"W{l}", w) for l, w in enumerate(self.weights, 1))
        biases = tuple(self._checked(f"b{l}", b) for l, b in enumerate(self.biases, 1))
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "biases", biases)

    @property
    def depth(self) -> int:
        """L, the number of layers with weights (the input layer is layer 0)."""
        return len(self.sizes) - 1

    def shape_of(self, name: str) -> tuple[int, int]:
        """The slides' shape of W{l} (n_l, n_{l-1}) or b{l} (n_l, 1)."""
        layer = int(name[1:])
        return (self.sizes[layer], self.sizes[layer - 1] if name[0] == "W" else 1)

    def hidden_saturating(self) -> list[int]:
        """Hidden layers (1-based) whose activation is sigmoid or tanh, which the slides advise against."""
        return [l for l, act in enumerate(self.activations[:-1], 1) if act.name in SATURATING]

    def warn_if_saturating(self) -> None:
        """Warn, as the slides do, about sigmoid or tanh in a hidden layer."""
        for layer in self.hidden_saturating():
            name = self.activations[layer - 1].name
            warnings.warn(
                f"layer {layer} is hidden and uses {name}; the slides advise relu for hidden layers "
                f"({name} saturates and slows learning)",
                stacklevel=3,
            )

    def to_json(self) -> str:
        """Sizes and activations as compact, key-sorted JSON (weights live in the graph)."""
        doc = {"sizes": list(self.sizes), "activations": [a.to_json() for a in self.activations]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NetworkSpec):
            return NotImplemented
        return (
            self.sizes == other.sizes
            and self.activations == other.activations
            and all(np.array_equal(a, b) for a, b in zip(self.weights, other.weights))
            and all(np.array_equal(a, b) for a, b in zip(self.biases, other.biases))
        )

    __hash__ = None  # type: ignore[assignment]  # arrays inside: equal specs need not hash alike

    def _checked(self, name: str, value: object) -> np.ndarray:
        expected = self.shape_of(name)
        array = np.asarray(value)
        if array.shape != expected:
            raise SpecError(f"layer {name[1:]}: {name} has shape {array.shape}, expected {expected}")
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise SpecError(f"layer {name[1:]}: {name} has dtype {array.dtype}, expected real numbers")
        array = np.array(array, dtype=np.float64)  # a private copy, so the frozen spec stays frozen
        if not np.all(np.isfinite(array)):
            raise SpecError(f"layer {name[1:]}: {name} contains NaN or inf")
        array.setflags(write=False)
        return array


def check_sizes(sizes: object) -> tuple[int, ...]:
    """Layer sizes as a tuple of at least two positive ints, or a SpecError saying which is wrong."""
    try:
        values = tuple(sizes)  # type: ignore[arg-type]
    except TypeError:
        raise SpecError(f"sizes must be a sequence of ints, got {sizes!r}") from None
    if len(values) < 2:
        raise SpecError(f"a network needs at least an input and an output size, got {list(values)}")
    for position, n in enumerate(values):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise SpecError(f"size {position} must be a positive int, got {n!r}")
    return tuple(int(n) for n in values)


def activation_names() -> str:
    """Every activation --activations takes, as its help lists them: from ACTIVATIONS, with aliases and rules."""
    notes = {"leaky_relu": f"leaky_relu[:alpha] (alpha {DEFAULT_LEAKY_ALPHA:g} by default)"}
    for alias, name in ALIASES.items():
        notes[name] = f"{name} (or {alias})"
    for name in OUTPUT_ONLY:
        notes[name] = f"{name} (output layer only, over 2 or more units)"
    return ", ".join(notes.get(name, name) for name in ACTIVATIONS)


def parse_activations(text: str | None, depth: int) -> tuple[Activation, ...]:
    """Comma-separated activations; one name for all layers or one per layer.

    None gives the slides' advice: relu in hidden layers, sigmoid at the output.
    """
    if text is None:
        return (Activation("relu"),) * (depth - 1) + (Activation("sigmoid"),)
    acts = tuple(Activation.parse(part) for part in text.split(","))
    if len(acts) == 1:
        return acts * depth
    if len(acts) != depth:
        raise SpecError(f"{depth} layers need 1 or {depth} activations, got {len(acts)}: {text!r}")
    return acts
