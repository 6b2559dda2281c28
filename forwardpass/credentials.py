"""Credential files, read for the server and the client alike: bearer tokens and PEM files."""

from __future__ import annotations

import hmac
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
    if len(token.splitlines()) > 1:  # no header can carry a line break: nobody could send this token
        raise ForwardpassError(f"{path}: the token file holds more than one line; a token is one line")
    return token


class BearerToken:
    """A server's bearer token, and the check of a request's Authorization value against it."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._usual = b"Bearer " + self._token  # the value as clients write it

    def carried_by(self, authorization: str, encoding: str = "utf-8") -> bool:
        """Whether an Authorization value (decoded from its bytes with `encoding`) is `Bearer <token>`:
        the scheme in any case (RFC 7235), the token compared in constant time."""
        # Every call with the token checks it: the value as clients write it is one comparison of its
        # bytes; any other spelling (the scheme in another case, spaces around) is parsed.
        if hmac.compare_digest(authorization.encode(encoding, "replace"), self._usual):
            return True
        scheme, _, supplied = authorization.strip().partition(" ")
        right_token = hmac.compare_digest(supplied.strip().encode(encoding, "replace"), self._token)
        return scheme.lower() == "bearer" and right_token


def read_pem(path: str | os.PathLike | None) -> bytes | None:
    """A PEM file's bytes, or None when no path is given."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ForwardpassError(f"{path}: cannot read it ({exc.strerror})", Kind.NOT_FOUND) from None
