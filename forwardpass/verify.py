"""`forwardpass check`: does a model file compute what its weights say it should?

The file is checked by onnx, read back into a spec, and random batches go through onnxruntime and
through the oracle of the read-back spec; each batch is held to the tolerance of its dtype and mode.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from forwardpass.builder.graph import check
from forwardpass.builder.readback import ReadBack, read_file

from .errors import ModelFormatError
from .runtime import Runtime
from .tolerance import Comparison, compare

DEFAULT_BATCHES = (1, 7, 1024)
INPUT_SCALE = 3.0  # standard normal inputs times this: enough to reach the saturated ends of sigmoid


@dataclass(frozen=True)
class Verification:
    """The read-back model, where it ran, its tolerance mode, and one comparison per batch size."""

    model: ReadBack
    provider: str
    mode: str
    results: dict[int, Comparison]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.results.values())


def verify(
    path: str | os.PathLike,
    provider: str = "auto",
    tf32: bool = False,
    batches: Sequence[int] = DEFAULT_BATCHES,
    seed: int = 0,
) -> Verification:
    """Check the file, then compare onnxruntime with the oracle on random batches."""
    model = read_file(path)
    try:
        check(onnx.load(os.fspath(path)))
    except onnx.checker.ValidationError as exc:
        raise ModelFormatError(f"{path}: onnx checker: {str(exc).strip().splitlines()[0]}") from None
    runtime = Runtime(path, provider=provider, tf32=tf32)
    mode = "tf32" if runtime.provider == "cuda" and tf32 and model.dtype == "float32" else model.dtype
    rng = np.random.default_rng(seed)
    results = {}
    for m in batches:
        X = (rng.standard_normal((model.spec.sizes[0], m)) * INPUT_SCALE).astype(runtime.dtype)
        fed = X.T if model.layout == "rows" else X
        out = runtime.predict(np.ascontiguousarray(fed))
        results[m] = compare(model.spec, X.astype(np.float64), out.T if model.layout == "rows" else out, mode)
    return Verification(model, runtime.provider, mode, results)
