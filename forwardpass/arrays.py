"""Arrays to and from the files the CLI reads and writes: .npy and .csv."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from .errors import InputError, Kind

FORMATS = (".npy", ".csv")


def read_array(path: str | os.PathLike) -> np.ndarray:
    """A 2-D float array from .npy (no pickles) or comma-separated .csv."""
    path = Path(path)
    _check_format(path)
    if not path.exists():
        raise InputError(f"{path}: no such file", Kind.NOT_FOUND)
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            array = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read it as {path.suffix} ({exc})") from None
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InputError(f"{path}: holds {array.dtype}, expected numbers")
    return array


def write_array(array: np.ndarray, path: str | os.PathLike | None) -> None:
    """Write .npy or .csv; None writes CSV to stdout."""
    fmt = "%.9g" if array.dtype == np.float32 else "%.17g"  # digits enough to read the same value back
    if path is not None:
        path = Path(path)
        _check_format(path)
        if path.suffix == ".npy":
            np.save(path, array, allow_pickle=False)
            return
    np.savetxt(sys.stdout if path is None else path, array, delimiter=",", fmt=fmt)


def _check_format(path: Path) -> None:
    if path.suffix not in FORMATS:
        raise InputError(f"{path}: unknown format {path.suffix or '(no extension)'!r}; use {' or '.join(FORMATS)}")
