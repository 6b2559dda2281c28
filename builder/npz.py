"""Weights to and from `.npz` files: arrays W1, b1, W2, b2, ... in the slides' shapes."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence

import numpy as np

from forwardpass.errors import Kind, SpecError

from .spec import Activation, NetworkSpec, check_sizes, parse_activations

FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


def load_npz(
    path: str | os.PathLike,
    activations: Sequence[Activation] | None = None,
    sizes: Sequence[int] | None = None,
) -> NetworkSpec:
    """A spec from W1, b1, ... in an .npz (no pickles); sizes, if given, must agree with the arrays.

    Without activations the depth is the number of W arrays and the slides' default applies.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file", Kind.NOT_FOUND) from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SpecError(f"{path}: not a readable .npz of plain arrays ({exc})") from None
    if activations is None:
        depth = sum(1 for name in arrays if name.startswith("W"))
        activations = parse_activations(None, max(depth, 1))
    depth = len(activations)
    expected = {f"{kind}{l}" for l in range(1, depth + 1) for kind in "Wb"}
    missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
    if missing or extra:
        raise SpecError(
            f"{path}: {depth} layers need arrays {', '.join(sorted(expected, key=_layer_order))}; "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    weights = [arrays[f"W{l}"] for l in range(1, depth + 1)]
    if any(w.ndim != 2 for w in weights):
        bad = next(l for l, w in enumerate(weights, 1) if w.ndim != 2)
        raise SpecError(f"{path}: layer {bad}: W{bad} has shape {weights[bad - 1].shape}, expected 2-D")
    found = (weights[0].shape[1],) + tuple(w.shape[0] for w in weights)
    if sizes is not None and check_sizes(sizes) != found:
        raise SpecError(f"{path}: sizes {list(sizes)} given, but the weights have sizes {list(found)}")
    biases = [arrays[f"b{l}"] for l in range(1, depth + 1)]
    try:
        return NetworkSpec(found, tuple(activations), tuple(weights), tuple(biases))
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def npz_bytes(spec: NetworkSpec) -> bytes:
    """W1, b1, ... in the slides' shapes, float64, as the bytes of an uncompressed .npz.

    Written entry by entry with a fixed timestamp (np.savez stamps the current time), so equal
    weights give equal bytes and a rebuild leaves a committed file untouched.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for l, (w, b) in enumerate(zip(spec.weights, spec.biases), 1):
            for name, array in ((f"W{l}", w), (f"b{l}", b)):
                with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_TIME), "w") as entry:
                    np.lib.format.write_array(entry, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _layer_order(name: str) -> tuple[int, str]:
    return int(name[1:]), name[0]
