"""The element types forwardpass builds and serves, one row each, with every name they go by.

Each layer of the system names a dtype its own way: NumPy, ONNX's TensorProto code, onnxruntime's
type string, the Open Inference Protocol's datatype, Triton's config.pbtxt `TYPE_` and the typed
contents field of a gRPC tensor. They all come from this table, so a second copy cannot drift.
The ONNX codes are onnx.proto's TensorProto.DataType values (FLOAT = 1, DOUBLE = 11), written as
numbers so that this module, which the oracle's callers import, needs no ONNX code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ForwardpassError


@dataclass(frozen=True)
class DType:
    """One element type under each of its names."""

    name: str  # ours, as --dtype takes it
    numpy: np.dtype  # little-endian, as the protocol's raw bytes are
    onnx: int  # TensorProto.DataType
    onnxruntime: str  # NodeArg.type
    datatype: str  # the Open Inference Protocol's (KServe V2, Triton)
    config: str  # config.pbtxt data_type
    contents: str  # InferTensorContents field for typed (non-raw) values


DTYPES = (
    DType("float32", np.dtype("<f4"), 1, "tensor(float)", "FP32", "TYPE_FP32", "fp32_contents"),
    DType("float64", np.dtype("<f8"), 11, "tensor(double)", "FP64", "TYPE_FP64", "fp64_contents"),
)
BY_NAME = {d.name: d for d in DTYPES}
BY_DATATYPE = {d.datatype: d for d in DTYPES}
BY_NUMPY = {d.numpy: d for d in DTYPES}
BY_ONNXRUNTIME = {d.onnxruntime: d for d in DTYPES}


def dtype(name: str) -> DType:
    """Our dtype by its name (float32, float64), or an error listing the known ones."""
    if name not in BY_NAME:
        raise ForwardpassError(f"unknown dtype {name!r}; known: {', '.join(BY_NAME)}")
    return BY_NAME[name]


def of_numpy(array_dtype: np.dtype) -> DType:
    """The row of a NumPy dtype (either byte order)."""
    return BY_NUMPY[np.dtype(array_dtype).newbyteorder("<")]
