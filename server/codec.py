"""Tensors to and from the protocol's messages: raw bytes first, typed contents accepted.

Raw input bytes become a NumPy view without a copy (np.frombuffer); answers are always raw bytes,
one entry per output, since tritonclient cannot read typed output contents.
"""

from __future__ import annotations

import math

import numpy as np

from forwardpass.errors import ForwardpassError
from forwardpass.protos import grpc_service_pb2 as pb

from .model import ServedModel

LITTLE_ENDIAN = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
TYPED_FIELD = {"FP32": "fp32_contents", "FP64": "fp64_contents"}
CONTENT_FIELDS = [f.name for f in pb.InferTensorContents.DESCRIPTOR.fields]


def decode_input(request: pb.ModelInferRequest, model: ServedModel) -> tuple[np.ndarray, int]:
    """The request's one input as an array, and its row count; INVALID_ARGUMENT errors name the problem."""
    expected = model.input
    if len(request.inputs) != 1:
        got = ", ".join(f"'{i.name}'" for i in request.inputs) or "none"
        raise ForwardpassError(f"model '{model.name}' takes 1 input '{expected.name}', got {got}")
    tensor = request.inputs[0]
    if tensor.name != expected.name:
        raise ForwardpassError(f"unexpected input '{tensor.name}' for model '{model.name}'; it takes '{expected.name}'")
    if tensor.datatype != expected.datatype:
        raise ForwardpassError(
            f"input '{tensor.name}' has datatype '{tensor.datatype}', "
            f"but model '{model.name}' takes '{expected.datatype}'"
        )
    shape = tuple(tensor.shape)
    rows = model.check_shape(shape)
    count = math.prod(shape)
    # Scanning the typed fields costs more than the rest of a small request: only when there are any.
    typed = (
        [name for name in CONTENT_FIELDS if len(getattr(tensor.contents, name))] if tensor.HasField("contents") else []
    )
    if request.raw_input_contents:
        if typed:
            raise ForwardpassError(
                f"input '{tensor.name}' has both raw_input_contents and contents.{typed[0]}; send one"
            )
        if len(request.raw_input_contents) != 1:
            raise ForwardpassError(f"{len(request.raw_input_contents)} raw_input_contents entries for 1 input")
        raw = request.raw_input_contents[0]
        dtype = LITTLE_ENDIAN[expected.datatype]
        if len(raw) != count * dtype.itemsize:
            raise ForwardpassError(
                f"input byte size mismatch for input '{tensor.name}' for model '{model.name}': "
                f"shape {list(shape)} of {expected.datatype} needs {count * dtype.itemsize} bytes, got {len(raw)}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape), rows
    field = TYPED_FIELD[expected.datatype]
    if not typed:
        raise ForwardpassError(f"no data for input '{tensor.name}': send raw_input_contents or contents.{field}")
    if typed != [field]:
        raise ForwardpassError(
            f"input '{tensor.name}' is {expected.datatype}: its values go in contents.{field}, got {', '.join(typed)}"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise ForwardpassError(
            f"input '{tensor.name}' has {len(values)} values in contents.{field}, shape {list(shape)} needs {count}"
        )
    return np.asarray(values, dtype=model.dtype).reshape(shape), rows


def requested_outputs(request: pb.ModelInferRequest, model: ServedModel) -> tuple[str, ...]:
    """The outputs the request names, or all the model serves."""
    return model.output_names([o.name for o in request.outputs])


def encode_response(
    request: pb.ModelInferRequest, model: ServedModel, outputs: dict[str, np.ndarray]
) -> pb.ModelInferResponse:
    """The answer: model name and version, the request's id, and every output as raw bytes."""
    response = pb.ModelInferResponse(model_name=model.name, model_version=str(model.version), id=request.id)
    datatype = model.input.datatype
    for name, array in outputs.items():
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(array.astype(LITTLE_ENDIAN[datatype], copy=False).tobytes())
    return response


def tensor_metadata(tensor) -> pb.ModelMetadataResponse.TensorMetadata:
    """A served tensor as ModelMetadata shows it."""
    return pb.ModelMetadataResponse.TensorMetadata(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
