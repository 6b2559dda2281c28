"""gRPC's messages to and from the data plane's plain values; no model is needed to convert.

Raw input bytes are handed on as they are, and become a NumPy view without a copy; answers
are always raw bytes, one entry per output, since tritonclient cannot read typed output contents.
"""

from __future__ import annotations

import functools
import time

from forwardpass.errors import ForwardpassError
from forwardpass.protos import grpc_service_pb2 as pb

from .dataplane import IndexEntry, ModelMetadata, VersionStatistics
from .inference import InferInput, InferRequest, InferResponse, RequestedOutput
from .model import Tensor
from .stats import Duration

CONTENT_FIELDS = [f.name for f in pb.InferTensorContents.DESCRIPTOR.fields]


def infer_request(
    request: pb.ModelInferRequest,
    deadline_ns: int | None = None,
    answer_limit: int | None = None,
    raw: list[bytes] | None = None,
) -> InferRequest:
    """The plain request; `deadline_ns` is the call's deadline on time.monotonic_ns(), if it has one
    (see `deadline`); `answer_limit` the largest answer the server sends (its outputs go as raw bytes);
    `raw` the request's raw_input_contents when the caller has read them already (raw_contents)."""
    raw = raw_contents(request) if raw is None else raw
    tensors = request.inputs  # protobuf makes a new view of a repeated field or map on each read: each read once
    if raw and len(raw) != len(tensors) == 1:  # with another count of inputs, the data plane says more
        raise ForwardpassError(f"{len(raw)} raw_input_contents entries for 1 input")
    if len(tensors) == 1:  # the usual request: no enumerate over a view of the field
        inputs = (_input(tensors[0], raw[0] if raw else None),)
    else:
        inputs = tuple([_input(tensor, raw[i] if i < len(raw) else None) for i, tensor in enumerate(tensors)])
    named, given = request.outputs, request.parameters
    # By position, as inference.py says why.
    return InferRequest(
        request.model_name,
        request.model_version,
        inputs,
        tuple([RequestedOutput(o.name, parameters(o.parameters)) for o in named]) if named else (),
        request.id,
        parameters(given) if given else {},
        deadline_ns,
        answer_limit,
    )


def raw_contents(request: pb.ModelInferRequest) -> list[bytes]:
    """The request's raw_input_contents, read once: protobuf copies an entry out on every read of it
    (about 19 µs for 65,536 rows of 3 float32 values). A slice makes the list in one call (list() walks
    the field's view entry by entry, at twice the cost for one entry)."""
    return request.raw_input_contents[:]


def converted_values(request: pb.ModelInferRequest, enough: int) -> int:
    """How many values infer_request converts one by one in Python, counted without reading them: the
    inputs' typed values (contents fields), and every parameter and requested output. The count stops
    once it reaches `enough`: a message of millions of entries is not walked where it is asked."""
    count = len(request.parameters) + len(request.outputs)
    for output in request.outputs:
        if count >= enough:
            return count
        count += len(output.parameters)
    for tensor in request.inputs:
        if count >= enough:
            return count
        count += len(tensor.parameters)
        if tensor.HasField("contents"):  # a raw request has none: its fields are not looked at
            contents = tensor.contents
            for name in CONTENT_FIELDS:
                count += len(getattr(contents, name))
    return count


def deadline(time_remaining: float | None) -> int | None:
    """A call's seconds left as a point on time.monotonic_ns(), read when the call arrives: a call that
    then waits for a handler thread has its wait counted against its deadline."""
    return None if time_remaining is None else time.monotonic_ns() + int(time_remaining * 1e9)


def _input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> InferInput:
    # The shape sliced first: a tuple of the field's view reads it value by value, at twice the cost.
    name, datatype, shape, given = tensor.name, tensor.datatype, tuple(tensor.shape[:]), tensor.parameters
    if not tensor.HasField("contents"):  # raw bytes or no values: no typed field to scan (the usual request)
        return InferInput(name, datatype, shape, raw, parameters(given) if given else {}, None)
    # Scanning the typed fields costs more than the rest of a small request: only when there are any.
    contents = tensor.contents
    typed = [field for field in CONTENT_FIELDS if len(getattr(contents, field))]
    if raw is not None and typed:
        raise ForwardpassError(f"input '{name}' has both raw_input_contents and contents.{typed[0]}; send one")
    if len(typed) > 1:
        raise ForwardpassError(f"input '{name}' has values in {', '.join(typed)}; send one contents field")
    data = raw if raw is not None else getattr(contents, typed[0]) if typed else None
    return InferInput(name, datatype, shape, data, parameters(given) if given else {}, typed[0] if typed else None)


def parameters(message) -> dict[str, object]:
    """An InferParameter (or ModelRepositoryParameter) map as plain values."""
    return {key: getattr(value, value.WhichOneof("parameter_choice") or "bool_param") for key, value in message.items()}


def infer_response(answer: InferResponse) -> bytes:
    """The answer as a serialized ModelInferResponse, every output as raw little-endian bytes.

    Written here, not built as a message for protobuf to serialize: building and serializing one
    took several times as long for a batch-1 answer, and each output's bytes were copied into the
    message, then into its serialization. Here each output is copied once, straight from its array.
    The bytes are what protobuf writes for the same message (its fields in number order; tests compare
    them)."""
    parts = [_answer_head(answer.model, answer.version)]
    if answer.id:
        parts += _field(_ID, answer.id.encode())
    for output in answer.outputs:
        parts.append(_output_field(output.name, output.datatype, output.array.shape))
    for output in answer.outputs:
        parts += (_RAW, _varint(output.array.nbytes), output.array)  # the array's own buffer: no copy until join
    return b"".join(parts)


# The fields of ModelInferResponse that infer_response writes: their tags (field number and wire type 2,
# length-delimited), from the generated descriptor.
_FIELDS = pb.ModelInferResponse.DESCRIPTOR.fields_by_name
_OUTPUT_FIELDS = pb.ModelInferResponse.InferOutputTensor.DESCRIPTOR.fields_by_name
_LENGTH_DELIMITED = 2


def _tag(field) -> bytes:
    return _varint(field.number << 3 | _LENGTH_DELIMITED)


_SMALL = [bytes([n]) for n in range(0x80)]  # a varint below 128 is its one byte


def _varint(n: int) -> bytes:
    """A non-negative integer as protobuf's base-128 varint."""
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_NAME, _VERSION, _ID, _OUTPUTS, _RAW = (
    _tag(_FIELDS[name]) for name in ("model_name", "model_version", "id", "outputs", "raw_output_contents")
)
_TENSOR_NAME, _TENSOR_DATATYPE, _TENSOR_SHAPE = (_tag(_OUTPUT_FIELDS[name]) for name in ("name", "datatype", "shape"))


def _field(tag: bytes, value: bytes) -> tuple[bytes, bytes, bytes]:
    return tag, _varint(len(value)), value


@functools.lru_cache(maxsize=1024)
def _answer_head(model: str, version: str) -> bytes:
    """model_name and model_version, the same for every answer of a version."""
    return b"".join((*_field(_NAME, model.encode()), *_field(_VERSION, version.encode())))


@functools.lru_cache(maxsize=4096)
def _output_field(name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
    """One entry of `outputs`, an InferOutputTensor: name, datatype and its shape packed (proto3's repeated
    int64; an array's dimensions are never negative). The same for every answer of as many rows."""
    tensor = [*_field(_TENSOR_NAME, name.encode()), *_field(_TENSOR_DATATYPE, datatype.encode())]
    if shape:
        tensor += _field(_TENSOR_SHAPE, b"".join([_varint(n) for n in shape]))
    return b"".join(_field(_OUTPUTS, b"".join(tensor)))


def tensor_metadata(tensor: Tensor) -> pb.ModelMetadataResponse.TensorMetadata:
    """A served tensor as ModelMetadata shows it."""
    return pb.ModelMetadataResponse.TensorMetadata(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)


def model_metadata(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=meta.name,
        versions=meta.versions,
        platform=meta.platform,
        inputs=[tensor_metadata(t) for t in meta.inputs],
        outputs=[tensor_metadata(t) for t in meta.outputs],
    )


def model_statistics(rows: list[VersionStatistics]) -> pb.ModelStatisticsResponse:
    return pb.ModelStatisticsResponse(model_stats=[_statistics(row) for row in rows])


def _statistics(row: VersionStatistics) -> pb.ModelStatistics:
    s = row.stats
    return pb.ModelStatistics(
        name=row.name,
        version=row.version,
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(**{name: _duration(d) for name, d in s.durations().items()}),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=b.batch_size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for b in s.batch_stats
        ],
    )


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def repository_index(rows: list[IndexEntry]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(name=r.name, version=r.version, state=r.state, reason=r.reason)
            for r in rows
        ]
    )
