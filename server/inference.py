"""An inference request and its answer as plain values, and the one place a request is checked.

Every front door (gRPC, HTTP, the page) turns its wire format into an `InferRequest` without
knowing the model; `validate` then checks it against the model once, in the order a user would
fix it, and hands back the input as an array the runtime can take as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from forwardpass.dtypes import BY_DATATYPE, DType
from forwardpass.errors import ForwardpassError, Kind

from .model import ServedModel

# Parameters Triton acts on that forwardpass does not implement: refusing them beats an answer
# that silently ignores what the caller asked for (a classification, shared memory, a sequence).
REFUSED_PARAMETERS = ("classification", "shared_memory_", "sequence_")
BINARY_DATA_SIZE = "binary_data_size"  # the raw bytes of one input (Triton's binary extension)
ANSWER_OVERHEAD = 64 * 1024  # bytes an answer may take besides its values (names, shapes, framing)
RAW = (bytes, bytearray, memoryview)  # an input's data as raw little-endian bytes; anything else is typed values

# The values below are made for every request and never changed after: slotted, not frozen, since
# a frozen dataclass sets each field through object.__setattr__ (about 1 µs more per value, 3 µs a
# request, measured against a server's 10-20 µs of Python per small call). The doors' codecs pass
# their fields by position: by keyword, a slotted dataclass's __init__ took about twice as long.


@dataclass(slots=True)
class InferInput:
    """One input tensor: raw little-endian bytes, typed values, or None when the request sent none.
    `typed_field` is where typed values came from when the wire says it apart from `datatype`
    (gRPC's contents fields), so a mismatch is named in the caller's terms."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes | memoryview | Sequence | None
    parameters: Mapping[str, object] = field(default_factory=dict)
    typed_field: str | None = None


@dataclass(slots=True)
class RequestedOutput:
    """An output the caller names, with its parameters."""

    name: str
    parameters: Mapping[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """A request as every front door hands it over: no transport, no model yet."""

    model: str
    version: str = ""
    inputs: tuple[InferInput, ...] = ()
    outputs: tuple[RequestedOutput, ...] = ()
    id: str = ""
    parameters: Mapping[str, object] = field(default_factory=dict)
    deadline_ns: int | None = None  # time.monotonic_ns() after which the answer is of no use
    # The largest answer the front door sends (bytes), and the bytes one value of an output takes on
    # its wire, by the output's name and the value's itemsize (None: the itemsize, as raw bytes): an
    # answer estimated above the limit is refused before it is computed.
    answer_limit: int | None = None
    value_bytes: Callable[[str, int], int] | None = None


@dataclass(slots=True)
class OutputTensor:
    """One output: `array` is little-endian and C-contiguous, ready to go out as bytes."""

    name: str
    datatype: str
    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape


@dataclass(slots=True)
class InferResponse:
    """The answer: which model version computed it, the request's id, the outputs."""

    model: str
    version: str
    id: str
    outputs: tuple[OutputTensor, ...]


def check_parameters(parameters: Mapping[str, object], where: str) -> None:
    """Refuse a parameter Triton acts on and forwardpass does not; other keys pass."""
    for key in parameters:
        if key.startswith(REFUSED_PARAMETERS):
            raise ForwardpassError(f"parameter '{key}' on {where} is not supported by forwardpass")


def timeout_ns(parameters: Mapping[str, object]) -> int | None:
    """The request's `timeout` parameter (microseconds, Triton's) in nanoseconds; None when absent or
    0, which means no timeout, as a queue policy's default_timeout_microseconds 0 does in Triton."""
    value = parameters.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ForwardpassError(f"parameter 'timeout' must be a non-negative integer of microseconds, got {value!r}")
    return value * 1000 or None


def validate(request: InferRequest, model: ServedModel) -> tuple[np.ndarray, int, tuple[str, ...]]:
    """The input as an array, its row count and the outputs to compute, once the request is checked
    against the model, the size of its answer included; errors name the problem."""
    # Every request passes here, in one call: what most send (no parameters, raw bytes of the input's
    # shape, every output) reads each value once and calls nothing it does not need; anything else goes
    # to the helpers below, which name the problem.
    if request.parameters:
        check_parameters(request.parameters, "the request")
    if len(request.inputs) != 1:
        got = ", ".join(f"'{i.name}'" for i in request.inputs) or "none"
        raise ForwardpassError(f"model '{model.name}' takes 1 input '{model.input.name}', got {got}")
    tensor = request.inputs[0]
    name, shape, data, given = tensor.name, tensor.shape, tensor.data, tensor.parameters
    if given:
        check_parameters(given, f"input '{name}'")
    expected = model.input
    if name != expected.name:
        raise ForwardpassError(f"unexpected input '{name}' for model '{model.name}'; it takes '{expected.name}'")
    if tensor.datatype != expected.datatype:
        raise ForwardpassError(
            f"input '{name}' has datatype '{tensor.datatype}', but model '{model.name}' takes '{expected.datatype}'"
        )
    rows, row_bytes = _rows(shape, model), model.input_row_bytes
    if given or type(data) is not bytes or row_bytes is None or len(data) != rows * row_bytes:
        x = _array(tensor, model)  # says what does not fit
    else:  # raw bytes of the shape's size: a view of them, as _array makes
        x = np.ndarray(shape, model.input_dtype, data)
    names = _outputs(request.outputs, model) if request.outputs else model.output_names
    # The answer's size, refused (TOO_LARGE) above the front door's limit before it is computed.
    limit = request.answer_limit
    if limit is not None:
        if request.value_bytes is None and names is model.output_names:  # every output, as raw bytes
            size = ANSWER_OVERHEAD + rows * model.answer_row_bytes
        else:
            size = _answer_size(request, model, rows, names)
        if size > limit:
            raise _answer_too_large(size, limit, rows, names, model)
    return x, rows, names


def _rows(shape: tuple[int, ...], model: ServedModel) -> int:
    expected, axis, around = model.input.shape, model.batch_axis, model.shape_around_rows
    if around is not None:  # the usual input, one -1 (the rows)
        fits = len(shape) == len(expected) and shape[:axis] == around[0] and shape[axis + 1 :] == around[1]
        fits = fits and shape[axis] >= 0
    else:
        fits = len(shape) == len(expected) and all(d == n if d != -1 else n >= 0 for d, n in zip(expected, shape))
    if not fits:
        raise ForwardpassError(
            f"unexpected shape for input '{model.input.name}' for model '{model.name}': "
            f"expected {model.input.shape_text()}, got [{', '.join(str(n) for n in shape)}]"
        )
    rows = shape[axis]
    if rows == 0:
        raise ForwardpassError(f"empty batch: input '{model.input.name}' for model '{model.name}' has 0 rows")
    if model.max_batch_size and rows > model.max_batch_size:
        raise ForwardpassError(
            f"batch of {rows} rows is above the max_batch_size {model.max_batch_size} of model '{model.name}'"
        )
    return rows


def _array(tensor: InferInput, model: ServedModel) -> np.ndarray:
    """The tensor's data as an array of its shape: raw bytes without a copy, typed values cast."""
    data, dtype, count = tensor.data, model.input_dtype, math.prod(tensor.shape)
    declared = tensor.parameters.get(BINARY_DATA_SIZE) if tensor.parameters else None
    if not isinstance(data, RAW):
        if declared is not None:
            raise ForwardpassError(f"input '{tensor.name}' has '{BINARY_DATA_SIZE}' but its values are not raw bytes")
        return _typed(tensor, BY_DATATYPE[model.input.datatype], count)
    size = len(data)
    if declared is not None and (isinstance(declared, bool) or declared != size):
        raise ForwardpassError(
            f"input '{tensor.name}': parameter '{BINARY_DATA_SIZE}' says {declared!r} bytes, the raw data has {size}"
        )
    if size != count * dtype.itemsize:
        raise ForwardpassError(
            f"input byte size mismatch for input '{tensor.name}' for model '{model.name}': "
            f"shape {list(tensor.shape)} of {model.input.datatype} needs {count * dtype.itemsize} bytes, got {size}"
        )
    return np.ndarray(tensor.shape, dtype, data)  # a view of the bytes: one array made, not frombuffer's two


def _typed(tensor: InferInput, dtype: DType, count: int) -> np.ndarray:
    if tensor.data is None:
        raise ForwardpassError(
            f"no data for input '{tensor.name}': send raw_input_contents or contents.{dtype.contents}"
        )
    if tensor.typed_field is not None and tensor.typed_field != dtype.contents:
        raise ForwardpassError(
            f"input '{tensor.name}' is {dtype.datatype}: its values go in contents.{dtype.contents}, "
            f"got {tensor.typed_field}"
        )
    try:
        values = np.asarray(tensor.data, dtype=dtype.numpy).reshape(-1)
    except (TypeError, ValueError):
        raise ForwardpassError(f"input '{tensor.name}': its data is not a list of numbers") from None
    if values.size != count:
        where = f" in contents.{tensor.typed_field}" if tensor.typed_field else ""
        raise ForwardpassError(
            f"input '{tensor.name}' has {values.size} values{where}, shape {list(tensor.shape)} needs {count}"
        )
    return values.reshape(tensor.shape)


def _answer_size(request: InferRequest, model: ServedModel, rows: int, outputs: tuple[str, ...]) -> int:
    """The bytes of an answer whose outputs are named, or whose door writes values as other than raw
    bytes (`value_bytes`): rows x each output's width x the bytes a value takes on the wire."""
    itemsize = model.input_dtype.itemsize
    value_bytes = request.value_bytes or (lambda name, size: size)
    return ANSWER_OVERHEAD + sum(rows * model.output_widths[name] * value_bytes(name, itemsize) for name in outputs)


def _answer_too_large(
    size: int, limit: int, rows: int, outputs: tuple[str, ...], model: ServedModel
) -> ForwardpassError:
    shown = ", ".join(f"{name} {model.output_widths[name]}" for name in outputs)
    return ForwardpassError(
        f"the answer would take about {size} bytes ({rows} rows x values per row: {shown}), above the "
        f"{limit}-byte limit (--max-message-mb); send fewer rows per request",
        Kind.TOO_LARGE,
    )


def _outputs(requested: Sequence[RequestedOutput], model: ServedModel) -> tuple[str, ...]:
    """The outputs a request names, checked; validate hands every output to a request that names none."""
    names = [o.name for o in requested]
    for output in requested:
        check_parameters(output.parameters, f"output '{output.name}'")
        if output.name not in model.output_names:
            raise ForwardpassError(
                f"unknown output '{output.name}' for model '{model.name}'; it has {', '.join(model.output_names)}"
            )
    if len(set(names)) != len(names):
        raise ForwardpassError(f"an output is requested twice: {', '.join(names)}")
    return tuple(names)
