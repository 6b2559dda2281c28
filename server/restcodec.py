"""HTTP bodies to and from the data plane's plain values: JSON, and Triton's binary tensor data.

A request body is a JSON header, optionally followed by raw tensor bytes; the header
`Inference-Header-Content-Length` says where the JSON ends (Triton's binary extension). With 0, the
whole body is the bytes of the model's one input (the raw form), and a batching model takes them
as one row. An answer is JSON, or JSON followed by the bytes of the outputs asked for as binary.

JSON cannot hold NaN or infinities. Outputs write them as the strings "NaN", "Infinity" and
"-Infinity", as protobuf's JSON mapping does for floats (tritonclient's and NumPy's float parsing
read them back); binary outputs carry them exactly. JSON inputs may hold the bare words NaN,
Infinity and -Infinity, as Python's json module (and so tritonclient) writes them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping

import numpy as np
import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from forwardpass.dtypes import BY_DATATYPE
from forwardpass.errors import ForwardpassError
from forwardpass.layout import shown

from . import jsonslices
from .dataplane import IndexEntry, ModelMetadata, VersionStatistics
from .inference import BINARY_DATA_SIZE, InferInput, InferRequest, InferResponse, RequestedOutput
from .model import Tensor
from .stats import Duration

HEADER_LENGTH = "inference-header-content-length"
NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}
# The most bytes one value takes in a JSON answer, with its comma, by itemsize: float32's shortest
# form is at most 15 characters (-1.17549435e-38), float64's 24 (-2.2250738585072014e-308).
JSON_ANSWER_VALUE_BYTES = {4: 16, 8: 25}


def infer_request(
    model: str,
    version: str,
    body: bytes,
    header_length: str | None,
    raw_input: Tensor | None,
    deadline_ns=None,
    answer_limit: int | None = None,
) -> InferRequest:
    """The plain request of an infer body; `raw_input` is the model's input, needed only by the raw form;
    `answer_limit` the largest answer the server sends, in bytes as infer_response writes it."""
    if header_length is None:
        return _from_json(model, version, _json(body), b"", deadline_ns, answer_limit)
    split = json_length(header_length, len(body))
    if split:
        return _from_json(model, version, _json(body[:split]), memoryview(body)[split:], deadline_ns, answer_limit)
    if raw_input is None:
        raise ForwardpassError("a raw body (Inference-Header-Content-Length: 0) needs a model with one input")
    return _request(model, version, (_raw_input(raw_input, body),), (), "", {}, deadline_ns, answer_limit)


def _request(
    model: str,
    version: str,
    inputs: tuple[InferInput, ...],
    outputs: tuple[RequestedOutput, ...],
    identifier: str,
    parameters: dict[str, object],
    deadline_ns,
    answer_limit: int | None,
) -> InferRequest:
    """The plain request, made once (each value made costs on every request); with the answer's
    limit, the bytes a value of each output takes as infer_response will write it."""
    value_bytes = None
    if answer_limit is not None:
        binary = _binary_outputs(parameters, outputs)

        def value_bytes(name: str, itemsize: int) -> int:
            return itemsize if binary(name) else JSON_ANSWER_VALUE_BYTES.get(itemsize, 25)

    return InferRequest(model, version, inputs, outputs, identifier, parameters, deadline_ns, answer_limit, value_bytes)


def _binary_outputs(
    request_parameters: Mapping[str, object], requested: tuple[RequestedOutput, ...]
) -> Callable[[str], bool]:
    """Whether an output, by name, goes as binary data: its own binary_data, else binary_data_output."""
    default = bool(request_parameters.get("binary_data_output", False))
    asked = {o.name: o.parameters.get("binary_data", default) for o in requested}
    return lambda name: asked.get(name, default)


def json_length(text: str, body_length: int) -> int:
    """The bytes of JSON before the binary data, by the Inference-Header-Content-Length header's text."""
    if not text.isascii() or not text.isdigit():
        raise ForwardpassError(f"Inference-Header-Content-Length {shown(text)} is not a number of bytes")
    # int() refuses over 4,300 digits; any count of 20 digits is past a body's length anyway.
    split = int(text) if len(text) < 20 else body_length + 1
    if split > body_length:
        raise ForwardpassError(
            f"Inference-Header-Content-Length {shown(text, quote=str)} is larger than the body ({body_length} bytes)"
        )
    return split


def _raw_input(tensor: Tensor, body: bytes) -> InferInput:
    """The raw form: the body is one input; a batching (rows) model gets one row, a columns model as
    many columns as the bytes hold."""
    width = next(d for d in tensor.shape if d != -1)
    if tensor.shape[0] == -1:
        return InferInput(tensor.name, tensor.datatype, (1, width), body)
    column_bytes = width * BY_DATATYPE[tensor.datatype].numpy.itemsize
    if len(body) % column_bytes:
        raise ForwardpassError(
            f"a raw body of {len(body)} bytes is no whole number of {width}-value {tensor.datatype} columns"
        )
    return InferInput(tensor.name, tensor.datatype, (width, len(body) // column_bytes), body)


def _json(data: bytes | memoryview) -> dict:
    document = jsonslices.parse(data) if isinstance(data, (bytes, bytearray)) else None  # None: a small body
    return document if document is not None else jsonslices.whole(data)


def _from_json(
    model: str, version: str, document: dict, binary: memoryview | bytes, deadline_ns, answer_limit: int | None
) -> InferRequest:
    inputs, offset = [], 0
    for item in _list(document, "inputs"):
        tensor, used = _input(_object(item, "an input"), binary, offset)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise ForwardpassError(f"the body has {len(binary) - offset} bytes after the inputs' binary_data_size")
    outputs = tuple(
        RequestedOutput(_text(o, "name"), _flagged(_parameters(o), "binary_data"))
        for o in (_object(x, "an output") for x in _list(document, "outputs", []))
    )
    identifier = document.get("id", "")
    if not isinstance(identifier, str):  # as Triton: str() of a deep nesting would overflow the stack
        raise ForwardpassError("'id' must be a string")
    parameters = _flagged(_parameters(document), "binary_data_output")
    return _request(model, version, tuple(inputs), outputs, identifier, parameters, deadline_ns, answer_limit)


def _input(item: dict, binary: memoryview | bytes, offset: int) -> tuple[InferInput, int]:
    name, datatype = _text(item, "name"), _text(item, "datatype")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ForwardpassError(f"input '{name}': 'shape' must be a list of integers")
    parameters = _parameters(item)
    size = parameters.get(BINARY_DATA_SIZE)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise ForwardpassError(
                f"input '{name}': binary_data_size {size!r} does not fit "
                f"the {len(binary) - offset} bytes after the JSON"
            )
        return InferInput(name, datatype, tuple(shape), binary[offset : offset + size], parameters), size
    if "data" not in item:
        raise ForwardpassError(f"input '{name}' has no 'data' and no binary_data_size")
    return InferInput(name, datatype, tuple(shape), _numbers(name, item["data"]), parameters), 0


def _numbers(name: str, data) -> np.ndarray:
    """JSON data (flat or nested, row-major) as a flat array of numbers; anything else is refused."""
    if isinstance(data, np.ndarray):
        return data  # cut from a large body by jsonslices, flat and checked there
    try:
        array = np.asarray(data)
    except ValueError:  # ragged nesting
        raise ForwardpassError(f"input '{name}': 'data' is not a rectangular list of numbers") from None
    if array.dtype.kind not in "iuf" or _holds_booleans(data, array.ndim):
        # strings, booleans, null and mixtures are no tensor values (NumPy reads true among floats as 1.0)
        raise ForwardpassError(f"input '{name}': 'data' must hold numbers only")
    return array.reshape(-1)


def _holds_booleans(data, depth: int) -> bool:
    """Whether a rectangular nesting `depth` lists deep holds true or false anywhere."""
    values = data if isinstance(data, list) else [data]
    for _ in range(depth - 1):
        values = itertools.chain.from_iterable(values)
    return bool in map(type, values)


def _flagged(parameters: dict[str, object], key: str) -> dict[str, object]:
    """The parameters, after checking that `key`, when present, is a JSON boolean (as Triton does)."""
    if not isinstance(parameters.get(key, False), bool):
        raise ForwardpassError(f"parameter '{key}' must be true or false, got {parameters[key]!r}")
    return parameters


def _parameters(item: dict) -> dict[str, object]:
    parameters = item.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ForwardpassError("'parameters' must be a JSON object")
    return parameters


def _object(item, what: str) -> dict:
    if not isinstance(item, dict):
        raise ForwardpassError(f"{what} must be a JSON object")
    return item


def _list(document: dict, key: str, default=None) -> list:
    value = document.get(key, default)
    if not isinstance(value, list):
        raise ForwardpassError(f"'{key}' must be a JSON list")
    return value


def _text(item: dict, key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise ForwardpassError(f"'{key}' must be a string")
    return value


def infer_response(
    answer: InferResponse, request_parameters: Mapping[str, object], requested: tuple[RequestedOutput, ...]
) -> tuple[bytes, int | None]:
    """The answer's body, and the JSON header's length when binary outputs follow it (else None)."""
    binary = _binary_outputs(request_parameters, requested)
    outputs, blobs = [], []
    for output in answer.outputs:
        entry = {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)}
        if binary(output.name):
            blob = memoryview(output.array).cast("B")  # joined into the body below: one copy, not two
            entry["parameters"] = {BINARY_DATA_SIZE: blob.nbytes}
            blobs.append(blob)
        else:
            entry["data"] = json_values(output.array.reshape(-1))
        outputs.append(entry)
    document = {"model_name": answer.model, "model_version": answer.version, "outputs": outputs}
    if answer.id:
        document["id"] = answer.id
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


FEW_VALUES = 64


def json_values(array: np.ndarray) -> np.ndarray | list:
    """A flat array as JSON numbers (orjson writes float32 in its shortest exact form, with
    OPT_SERIALIZE_NUMPY); with NaN or infinities, a list with those as strings, since orjson would
    write them as null."""
    # A few values are checked faster as Python floats than through two NumPy calls (0.3 against 2 µs).
    finite = all(map(math.isfinite, array.tolist())) if array.size <= FEW_VALUES else np.isfinite(array).all()
    if finite:
        return array
    return [v if math.isfinite(v) else NON_FINITE.get(v, "NaN") for v in array.tolist()]


# The other answers, written from the data plane's plain values in the field order of the V2
# protocol's messages, as Triton's HTTP door writes them.
def model_metadata(meta: ModelMetadata) -> dict:
    """GET /v2/models/{m}: name, versions, platform and tensors."""
    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": [_tensor(t) for t in meta.inputs],
        "outputs": [_tensor(t) for t in meta.outputs],
    }


def _tensor(tensor: Tensor) -> dict:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def model_statistics(rows: list[VersionStatistics]) -> dict:
    """GET .../stats: each version's counters, summed over every worker (no memory figures are kept)."""
    return {"model_stats": [_statistics(row) for row in rows]}


def _statistics(row: VersionStatistics) -> dict:
    s = row.stats
    return {
        "name": row.name,
        "version": row.version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {name: _duration(d) for name, d in s.durations().items()},
        "batch_stats": [
            {
                "batch_size": b.batch_size,
                "compute_input": _duration(b.compute_input),
                "compute_infer": _duration(b.compute_infer),
                "compute_output": _duration(b.compute_output),
            }
            for b in s.batch_stats
        ],
        "memory_usage": [],
    }


def _duration(d: Duration) -> dict:
    return {"count": d.count, "ns": d.ns}


def repository_index(rows: list[IndexEntry]) -> list[dict]:
    """POST /v2/repository/index: one entry per version (or per model that is not ready)."""
    return [{"name": r.name, "version": r.version, "state": r.state, "reason": r.reason} for r in rows]


# protobuf's JSON writes 64-bit integers as strings (JavaScript's numbers cannot hold them all);
# Triton's config JSON writes them as numbers, as clients that read `dims` expect.
INT64_TYPES = (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
               FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64)  # fmt: skip


def model_config(config: Message) -> dict:
    """GET .../config: the ModelConfig in protobuf's JSON with proto field names, every scalar and
    repeated field written, 64-bit integers as numbers, fields in .proto order, empty maps left out."""
    document = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _as_triton_writes(config.DESCRIPTOR, document)


def _as_triton_writes(descriptor: Descriptor, document: dict) -> dict:
    ordered = {}
    for field in descriptor.fields:
        if field.name not in document:
            continue
        value = document[field.name]
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            if value:
                ordered[field.name] = {k: _field_value(entry.fields_by_name["value"], v) for k, v in value.items()}
        elif isinstance(value, list):
            ordered[field.name] = [_field_value(field, v) for v in value]
        else:
            ordered[field.name] = _field_value(field, value)
    return ordered


def _field_value(field: FieldDescriptor, value):
    if field.message_type is not None:
        return _as_triton_writes(field.message_type, value)
    if field.type in INT64_TYPES:
        return int(value)
    return value
