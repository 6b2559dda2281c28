"""The V2 (Open Inference Protocol) infer call that every candidate stack serves: the same work behind each.

A request in JSON, or with Triton's binary tensor extension (a JSON header of Inference-Header-Content-Length
bytes, then the raw tensors), is decoded into NumPy arrays; the "model" answers a fixed y of one float32
column per row, so that the stacks, not a model, are measured; the answer is laid out as forwardpass's
(JSON, or binary to a binary request). The JSON library is the caller's choice: the stdlib's or orjson.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import orjson

BINARY_HEADER = "inference-header-content-length"
DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}


class Codec(NamedTuple):
    """How JSON is read and written: bytes in, bytes out."""

    loads: Callable[[bytes], dict]
    dumps: Callable[[dict], bytes]


_compact = json.JSONEncoder(separators=(",", ":"))
STDLIB = Codec(json.loads, lambda document: _compact.encode(document).encode())
ORJSON = Codec(orjson.loads, orjson.dumps)


@lru_cache(maxsize=8)
def _y(rows: int) -> np.ndarray:
    """The model's answer to `rows` rows: made once per size."""
    return np.full((rows, 1), 0.5, np.float32)


def infer_json(body: bytes, model: str, codec: Codec = STDLIB) -> bytes:
    """A JSON request's answer, in JSON."""
    request = codec.loads(body)
    rows = 0
    for tensor in request["inputs"]:
        x = np.asarray(tensor["data"], dtype=DTYPES[tensor["datatype"]]).reshape(tensor["shape"])
        rows = x.shape[0]
    y = _y(rows)
    output = {"name": "y", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}
    return codec.dumps({"model_name": model, "model_version": "1", "outputs": [output]})


def infer_binary(body: bytes, header_length: int, model: str, codec: Codec = STDLIB) -> tuple[bytes, int]:
    """A binary request's answer: the JSON header, then y's bytes; and the header's length."""
    view = memoryview(body)
    request = codec.loads(bytes(view[:header_length]))
    offset, rows = header_length, 0
    for tensor in request["inputs"]:
        size = tensor["parameters"]["binary_data_size"]
        x = np.frombuffer(view[offset : offset + size], dtype=DTYPES[tensor["datatype"]]).reshape(tensor["shape"])
        offset, rows = offset + size, x.shape[0]
    raw = _y(rows).tobytes()
    output = {"name": "y", "datatype": "FP32", "shape": [rows, 1], "parameters": {"binary_data_size": len(raw)}}
    header = codec.dumps({"model_name": model, "model_version": "1", "outputs": [output]})
    return header + raw, len(header)


def model_name(path: str) -> str | None:
    """The model of an infer path, /v2/models/{model}/infer; None for any other path."""
    segments = path.split("/")
    if len(segments) == 5 and segments[:3] == ["", "v2", "models"] and segments[4] == "infer":
        return segments[3]
    return None
