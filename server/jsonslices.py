"""A large JSON request parsed a slice at a time, so that its peak memory follows the tensor's size.

A JSON parser holds the whole text, a tree of every value and then a Python object per value: a
40 MB body of 2 million numbers costs about 150 MB at once. Here each input's "data" list of
numbers (flat or nested, as the V2 protocol allows) is cut out of the body and parsed in slices of
about 1 MiB, each into a NumPy array; the rest of the document, small in any valid request, is
parsed whole. The result is the document a whole parse gives, with each large "data" as a flat
NumPy array (row-major, as restcodec flattens it).

Nothing here is trusted to the scan alone: every slice and the rest are parsed by the JSON parser,
a nested list's brackets must be exactly those of a rectangular nesting, and a list cut from
anywhere but an input's "data" is refused.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import orjson

from forwardpass.errors import ForwardpassError

LARGE_BODY = 1 << 20  # bytes from which a body is parsed in slices; below, a whole parse costs a few MB
SLICE = 1 << 20  # bytes of numbers parsed at a time
LARGE_DATA = 1 << 16  # a "data" list this long is cut out; shorter ones stay with the rest
MAX_REST = 1 << 20  # bytes of JSON besides the cut-out data that a large body may carry

DATA_KEY = re.compile(rb'"data"[ \t\r\n]*:[ \t\r\n]*\[')
# A list's end: a closing bracket followed by what may follow a value inside an object (the end of
# the object, or a comma and the next key); in a list of numbers, a bracket is followed by a comma
# and a bracket, or by a bracket.
LIST_END = re.compile(rb'\][ \t\r\n]*(?:\}|,[ \t\r\n]*")')
NOT_LIST_MARKS = bytes(c for c in range(256) if c not in b"[],")
SENTINEL = "\x00forwardpass cut-out data"  # a key no request sends: a NUL leads it


def parse(body: bytes | bytearray) -> dict | None:
    """The document of a large body, with its inputs' large "data" lists as flat NumPy arrays; None
    when the body is small enough to parse whole."""
    if len(body) < LARGE_BODY:
        return None
    rest, arrays, start = [], [], 0
    for match in DATA_KEY.finditer(body):
        opening = match.end() - 1
        if opening < start or _escaped(body, match.start()):
            continue  # within a list already cut out, or not a key: a quote after a backslash is in a string
        end = LIST_END.search(body, opening)
        if end is None or end.start() + 1 - opening < LARGE_DATA:
            continue
        closing = end.start() + 1
        arrays.append(_numbers(body, opening, closing))
        rest += [body[start:opening], b'{"\\u0000forwardpass cut-out data": %d}' % (len(arrays) - 1)]
        start = closing
    if not arrays:
        return None
    rest.append(body[start:])
    text = b"".join(rest)
    if len(text) > MAX_REST:
        raise ForwardpassError(
            f"a JSON body over {LARGE_BODY >> 20} MiB carries {len(text)} bytes besides lists of numbers, above "
            f"{MAX_REST}: names, shapes and parameters take far less; send the rest as lists of numbers"
        )
    return _placed(whole(text), arrays)


def _escaped(body: bytes | bytearray, quote: int) -> bool:
    slashes = 0
    while quote - slashes > 0 and body[quote - slashes - 1] == ord("\\"):
        slashes += 1
    return slashes % 2 == 1


def _numbers(body: bytes | bytearray, opening: int, closing: int) -> np.ndarray:
    """The numbers of the list from `opening` to `closing` (its brackets), flat, parsed a slice at
    a time: with the brackets taken out, commas separate the values of a rectangular nesting."""
    flat = body.find(b"[", opening + 1, closing) < 0 and body.find(b"]", opening, closing - 1) < 0
    pieces, marks, at = [], [], opening + 1
    while True:
        cut = body.find(b",", min(at + SLICE, closing - 1), closing - 1)
        last = cut < 0
        text = body[at : closing - 1 if last else cut]
        if not flat:
            marks.append(text.translate(None, NOT_LIST_MARKS))
            text = text.translate(None, b"[]")
        pieces.append(_slice(text))
        if last:
            break
        at = cut + 1
    if not flat:
        _check_rectangular(b"[" + b",".join(marks) + b"]", opening, sum(piece.size for piece in pieces))
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _slice(text: bytes) -> np.ndarray:
    try:
        values = orjson.loads(b"[" + text + b"]")
    except orjson.JSONDecodeError as exc:
        try:  # NaN and Infinity, as Python's json module writes them (restcodec accepts them too)
            values = json.loads(b"[" + text + b"]")
        except ValueError:
            raise ForwardpassError(f"the request body is not valid JSON: in a list of numbers, {exc}") from None
    array = np.asarray(values)
    if not array.size:  # a comma with no value after it: [1, 2, ]
        raise ForwardpassError("the request body is not valid JSON: a list of numbers has a value missing")
    if array.dtype.kind not in "iuf" or b"true" in text or b"false" in text:
        raise ForwardpassError("an input's 'data' must hold numbers only")
    return array


def _check_rectangular(marks: bytes, at: int, values: int) -> None:
    """Refuse a nesting whose brackets and commas are not those of a rectangular list of `values`
    numbers. The first list at each depth ends at the first run of as many closing brackets as
    depths below it, which fixes the only shape the nesting can have; its brackets must be that
    shape's."""
    levels = len(marks) - len(marks.lstrip(b"["))
    dims, inner = [], 0
    for depth in range(levels, 0, -1):  # innermost first
        closing = marks.find(b"]" * (levels - depth + 1))
        length = closing + levels - depth + 1 - (depth - 1)  # the first list at this depth, brackets and all
        size, rest = divmod(length - 1, inner + 1) if inner else (length - 1, 0)
        if closing < 0 or rest or size < 1:
            raise ForwardpassError(f"the 'data' list at byte {at} is not a rectangular list of numbers")
        dims.append(size)
        inner = length
    if _pattern(dims) != marks or math.prod(dims) != values:
        raise ForwardpassError(f"the 'data' list at byte {at} is not a rectangular list of numbers")


def _pattern(dims: list[int]) -> bytes:
    """The brackets and commas of a rectangular list, `dims` innermost first."""
    inner = b"[" + b"," * (dims[0] - 1) + b"]"
    for size in dims[1:]:
        inner = b"[" + (inner + b",") * (size - 1) + inner + b"]"
    return inner


def whole(data: bytes | bytearray | memoryview) -> dict:
    """A body's document parsed whole (a small body, or what a large one holds besides its data).
    Python's json module writes NaN and Infinity as bare words, and tritonclient sends JSON that
    way: they are accepted, as Python reads them (nothing else orjson refuses is accepted)."""
    try:
        document = orjson.loads(data)  # refuses nesting deeper than 1,024 levels, and NaN
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):  # orjson words it differently from version to version: say it once, here
            raise ForwardpassError("the request body nests arrays or objects deeper than 1,024 levels") from None
        try:
            document = json.loads(bytes(data))
        except (ValueError, RecursionError):
            raise ForwardpassError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ForwardpassError("the request body must be a JSON object")
    return document


def _placed(document: dict, arrays: list[np.ndarray]) -> dict:
    """The document with each cut-out list back where it was: as an input's "data", and nowhere else."""
    placed = []
    inputs = document.get("inputs")
    for item in inputs if isinstance(inputs, list) else ():
        data = item.get("data") if isinstance(item, dict) else None
        if isinstance(data, dict) and list(data) == [SENTINEL] and isinstance(data[SENTINEL], int):
            placed.append(data[SENTINEL])
            item["data"] = arrays[data[SENTINEL]] if 0 <= data[SENTINEL] < len(arrays) else None
    if sorted(placed) != list(range(len(arrays))):
        raise ForwardpassError("a JSON body over 1 MiB may hold long lists of numbers only as an input's 'data'")
    return document
