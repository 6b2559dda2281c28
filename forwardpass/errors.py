"""Errors that name the problem, each with a neutral kind.

Code below the server and the CLI raises these; each front door maps a kind to its status (a gRPC
code, an HTTP status) and the CLI maps it to an exit code, so nothing below them imports a transport.
"""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    """What went wrong, independent of how it is reported."""

    BAD_INPUT = "bad input"
    NOT_FOUND = "not found"
    UNAVAILABLE = "unavailable"
    TOO_LARGE = "too large"
    DEADLINE = "deadline exceeded"
    UNSUPPORTED = "not supported"


class ForwardpassError(Exception):
    """A user-facing error: its message is one line that says what is wrong."""

    kind: Kind = Kind.BAD_INPUT

    def __init__(self, message: str, kind: Kind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class SpecError(ForwardpassError):
    """A network description that cannot be built: sizes, activations or weights."""


class ModelFormatError(ForwardpassError):
    """An ONNX file that is not a network of the shape forwardpass reads back."""


class InputError(ForwardpassError):
    """An input array whose rank, width or dtype does not fit the model."""


class ProviderError(ForwardpassError):
    """An execution provider or runtime that is asked for but cannot run here."""

    kind = Kind.UNAVAILABLE
