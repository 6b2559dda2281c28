"""`forwardpass check`: does a model file compute what its weights say it should?

The file is checked by onnx, read back into a spec, and random batches go through onnxruntime and
through the oracle of the read-back spec; each batch is held to the tolerance of its dtype and mode.
Where the weights the file was built from are known, the same batches also go through the oracle
of those: a file whose weights drifted agrees with itself, but not with them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from forwardpass.builder.graph import check
from forwardpass.builder.npz import load_npz
from forwardpass.builder.readback import ReadBack, read_file
from forwardpass.builder.spec import NetworkSpec

from .errors import ModelFormatError, SpecError
from .layout import MODEL_FILE, VERSION, WEIGHTS_FILE
from .runtime import Runtime
from .tolerance import Comparison, compare

DEFAULT_BATCHES = (1, 7, 1024)
INPUT_SCALE = 3.0  # standard normal inputs times this: enough to reach the saturated ends of sigmoid


@dataclass(frozen=True)
class Verification:
    """The read-back model, where it ran, its tolerance mode, and one comparison per batch size.

    `against_weights` holds, per batch, the comparison with the oracle of the intended weights
    (empty when none are known).
    """

    model: ReadBack
    provider: str
    mode: str
    results: dict[int, Comparison]
    weights: Path | None = None
    against_weights: dict[int, Comparison] = field(default_factory=dict)

    @property
    def runtime_ok(self) -> bool:
        """onnxruntime agrees with the oracle of the file's own weights in every batch."""
        return all(c.ok for c in self.results.values())

    @property
    def weights_ok(self) -> bool:
        """onnxruntime agrees with the oracle of the intended weights (true when none are known)."""
        return all(c.ok for c in self.against_weights.values())

    @property
    def ok(self) -> bool:
        """Both of the above."""
        return self.runtime_ok and self.weights_ok


def intended_weights(path: str | os.PathLike, given: str | os.PathLike | None = None) -> Path | None:
    """The .npz a model was built from: `given`, else the weights.npz beside a repository's model.onnx."""
    if given is not None:
        return Path(given)
    path = Path(path)
    beside = path.with_name(WEIGHTS_FILE)
    in_repository = path.name == MODEL_FILE and VERSION.fullmatch(path.absolute().parent.name)
    return beside if in_repository and beside.is_file() else None


def intended_spec(weights: str | os.PathLike, model: NetworkSpec) -> NetworkSpec:
    """W and b from the .npz with the model's activations; a layer whose W differs in shape is an error."""
    loaded = load_npz(weights)
    for l in range(1, max(loaded.depth, model.depth) + 1):
        found, expected = _shape_of_w(loaded, l), _shape_of_w(model, l)
        if found != expected:
            raise SpecError(f"{weights}: layer {l}: W{l} is {found} in the weights but {expected} in the model")
    return NetworkSpec(model.sizes, model.activations, loaded.weights, loaded.biases)


def verify(
    path: str | os.PathLike,
    provider: str = "auto",
    tf32: bool = False,
    batches: Sequence[int] = DEFAULT_BATCHES,
    seed: int = 0,
    weights: str | os.PathLike | None = None,
) -> Verification:
    """Check the file, then compare onnxruntime with the oracle (and that of `weights`) on random batches."""
    model = read_file(path)
    try:
        check(onnx.load(os.fspath(path)))
    except onnx.checker.ValidationError as exc:
        raise ModelFormatError(f"{path}: onnx checker: {str(exc).strip().splitlines()[0]}") from None
    intended = None if weights is None else intended_spec(weights, model.spec)
    runtime = Runtime(path, provider=provider, tf32=tf32)
    mode = "tf32" if runtime.provider == "cuda" and tf32 and model.dtype == "float32" else model.dtype
    rng = np.random.default_rng(seed)
    results, against = {}, {}
    for m in batches:
        X = (rng.standard_normal((model.spec.sizes[0], m)) * INPUT_SCALE).astype(runtime.dtype)
        fed = X.T if model.layout == "rows" else X
        out = runtime.predict(np.ascontiguousarray(fed))
        actual = out.T if model.layout == "rows" else out
        results[m] = compare(model.spec, X.astype(np.float64), actual, mode)
        if intended is not None:
            against[m] = compare(intended, X.astype(np.float64), actual, mode)
    return Verification(model, runtime.provider, mode, results, None if weights is None else Path(weights), against)


def _shape_of_w(spec: NetworkSpec, layer: int) -> str:
    return str(spec.shape_of(f"W{layer}")) if layer <= spec.depth else "absent"
