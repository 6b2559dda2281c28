"""Numeric helpers of the tests: random specs and inputs, feeding either layout, the one tolerance
assertion, and the models and reference runs they are held against."""

from __future__ import annotations

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from forwardpass.builder.graph import ExportOptions, build_model, serialize
from forwardpass.builder.spec import NetworkSpec
from forwardpass.tolerance import compare


def random_spec(rng: np.random.Generator, sizes, activations, scale: float = 1.0) -> NetworkSpec:
    """A spec with normal W and b (b non-zero, so a bias that broadcasts wrongly shows)."""
    weights = [rng.standard_normal((n, m)) * scale / np.sqrt(m) for m, n in zip(sizes[:-1], sizes[1:])]
    biases = [rng.standard_normal((n, 1)) * scale for n in sizes[1:]]
    return NetworkSpec(tuple(sizes), tuple(activations), tuple(weights), tuple(biases))


def random_input(rng: np.random.Generator, n0: int, m: int, dtype: str, scale: float = 3.0) -> np.ndarray:
    """X in columns (n0, m), already rounded to dtype, as the oracle and the runtime both see it."""
    return (rng.standard_normal((n0, m)) * scale).astype(dtype)


def feed(X: np.ndarray, layout: str) -> np.ndarray:
    """The columns X as the model takes it: rows are X transposed."""
    return np.ascontiguousarray(X.T) if layout == "rows" else X


def unfeed(y: np.ndarray, layout: str) -> np.ndarray:
    """A model's output back in columns."""
    return y.T if layout == "rows" else y


def assert_matches_oracle(spec: NetworkSpec, X: np.ndarray, actual: np.ndarray, mode: str, layer=None) -> None:
    """The one tolerance assertion: every element within the bound of `mode` (forwardpass.tolerance)."""
    result = compare(spec, X.astype(np.float64), actual, mode, layer)
    assert result.ok, f"{layer or 'output'} outside the {mode} bound: {result}"


def model_bytes(spec: NetworkSpec, **options) -> bytes:
    return serialize(build_model(spec, ExportOptions(**options)))


def reference_run(data: bytes, x: np.ndarray, outputs=None) -> list:
    """onnx's own ReferenceEvaluator, a second runtime beside onnxruntime."""
    evaluator = ReferenceEvaluator(onnx.load_from_string(data))
    return evaluator.run(outputs, {evaluator.input_names[0]: x})
