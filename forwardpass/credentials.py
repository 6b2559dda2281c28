"""Credential files, read for the server and the client alike: bearer tokens and PEM files."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ForwardpassError, Kind


def read_token(path: str | os.PathLike) -> str:
    """The token in a file (surrounding whitespace stripped); an empty or missing file is an error."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ForwardpassError(f"{path}: cannot read the token file ({exc.strerror})", Kind.NOT_FOUND) from None
    if not token:
        raise ForwardpassError(f"{path}: the token file is empty")
    return token


def read_pem(path: str | os.PathLike | None) -> bytes | None:
    """A PEM file's bytes, or None when no path is given."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ForwardpassError(f"{path}: cannot read it ({exc.strerror})", Kind.NOT_FOUND) from None
