"""An ONNX file back into a NetworkSpec: any chain of Gemm + activation, either layout, either dtype.

Ours or hand-made: the Gemm may carry W transposed and its bias in any shape that broadcasts the
right way; a Gemm with no activation after it is a linear layer. Anything else is refused with an
error that names the first node it cannot take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from forwardpass.errors import Kind, ModelFormatError, SpecError

from .graph import DTYPES, ONNX_OP, ExportOptions
from .spec import Activation, NetworkSpec

ACTIVATION_OF = {op: name for name, op in ONNX_OP.items()}
ONNX_LEAKY_DEFAULT = 0.01  # LeakyRelu's alpha when the attribute is absent (ONNX operator spec)


def _no_parameter(attrs: dict, layout: str, where: str) -> None:
    return None


def _leaky_alpha(attrs: dict, layout: str, where: str) -> float:
    return attrs.get("alpha", ONNX_LEAKY_DEFAULT)


def _softmax_over_units(attrs: dict, layout: str, where: str) -> None:
    units_axes = (1, -1) if layout == "rows" else (0, -2)
    axis = attrs.get("axis", -1)
    if axis not in units_axes:
        raise ModelFormatError(f"{where}: axis {axis} is not the units axis of {layout} layout ({units_axes[0]})")
    return None


# How each activation's node attributes read back, by name: its alpha (None where it has none), or
# an error where they describe something else.
PARAMETER_OF = {
    "sigmoid": _no_parameter,
    "tanh": _no_parameter,
    "relu": _no_parameter,
    "leaky_relu": _leaky_alpha,
    "identity": _no_parameter,
    "softmax": _softmax_over_units,
}


@dataclass(frozen=True)
class ReadBack:
    """What a model file holds: the spec, and how it was written."""

    spec: NetworkSpec
    layout: str
    dtype: str
    opset: int
    input_name: str
    output_name: str
    hidden_outputs: tuple[str, ...]
    producer: str = ""

    @property
    def options(self) -> ExportOptions:
        """Options that write this model again with forwardpass."""
        return ExportOptions(self.layout, self.dtype, self.opset, bool(self.hidden_outputs))


def read_file(path: str | os.PathLike) -> ReadBack:
    """Load an .onnx file and read it back; a missing or unreadable file is a clear error."""
    if not os.path.exists(path):
        raise ModelFormatError(f"{path}: no such file", Kind.NOT_FOUND)
    try:
        model = onnx.load(os.fspath(path))
    except Exception as exc:  # onnx raises protobuf's DecodeError, OSError and others
        raise ModelFormatError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    try:
        return read_model(model)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None


def read_model(model: onnx.ModelProto) -> ReadBack:
    """The spec and layout of a Gemm + activation chain."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelFormatError(f"the graph has {len(inputs)} inputs besides its weights, expected 1")
    dtype = _dtype_name(inputs[0].type.tensor_type.elem_type, f"input {inputs[0].name!r}")
    opset = _default_opset(model)
    walk = _Walk(inits, dtype, inputs[0].name)
    nodes = list(graph.node)
    i = 0
    while i < len(nodes):
        walk.gemm(nodes[i])
        has_activation = i + 1 < len(nodes) and nodes[i + 1].op_type != "Gemm"
        walk.activation(nodes[i + 1] if has_activation else None)
        i += 2 if has_activation else 1
    if not walk.layers:
        raise ModelFormatError("the graph has no Gemm node")
    outputs = [o.name for o in graph.output]
    if walk.current not in outputs:
        raise ModelFormatError(f"the last layer's output {walk.current!r} is not a graph output")
    hidden = tuple(o for o in outputs if o != walk.current)
    unknown = [o for o in hidden if o not in walk.tensors]
    if unknown:
        raise ModelFormatError(f"graph output {unknown[0]!r} is not made by any Gemm or activation")
    try:
        spec = NetworkSpec(walk.sizes, tuple(walk.acts), tuple(walk.weights), tuple(walk.biases))
    except SpecError as exc:
        raise ModelFormatError(str(exc)) from None
    return ReadBack(spec, walk.layout, dtype, opset, inputs[0].name, walk.current, hidden, model.producer_name)


class _Walk:
    """Follows the chain node by node, collecting W, b and g per layer."""

    def __init__(self, inits: dict[str, onnx.TensorProto], dtype: str, input_name: str) -> None:
        self.inits, self.dtype = inits, dtype
        self.current = input_name
        self.layout: str | None = None
        self.layers = 0
        self.sizes: list[int] = []
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        self.acts: list[Activation] = []
        self.tensors: set[str] = set()

    def gemm(self, node: onnx.NodeProto) -> None:
        where = _where(node)
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx"):
            raise ModelFormatError(f"{where}: expected a Gemm taking {self.current!r}")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise ModelFormatError(
                f"{where}: alpha and beta must be 1 (got {attrs.get('alpha', 1.0)}, {attrs.get('beta', 1.0)})"
            )
        if len(node.input) < 2 or self.current not in node.input[:2]:
            raise ModelFormatError(f"{where}: does not take the previous layer's output {self.current!r}")
        layout = "rows" if node.input[0] == self.current else "columns"
        if self.layout not in (None, layout):
            raise ModelFormatError(f"{where}: switches from {self.layout} to {layout} layout")
        self.layout = layout
        trans_data, trans_weight = ("transA", "transB") if layout == "rows" else ("transB", "transA")
        if attrs.get(trans_data, 0):
            raise ModelFormatError(f"{where}: {trans_data}=1 on the data input is not an MLP layer")
        stored = self._initializer(node, node.input[1] if layout == "rows" else node.input[0], "weight")
        if stored.ndim != 2:
            raise ModelFormatError(f"{where}: weight has shape {stored.shape}, expected 2-D")
        # The slides' W is (n_l, n_{l-1}). Rows computes A W^T, so W is stored as is with transB=1
        # and transposed without it; columns computes W A, so the reverse holds for transA.
        transposed = bool(attrs.get(trans_weight, 0)) == (layout == "columns")
        W = stored.T if transposed else stored
        if self.sizes and W.shape[1] != self.sizes[-1]:
            raise ModelFormatError(
                f"{where}: W has {W.shape[1]} columns but the previous layer has {self.sizes[-1]} units"
            )
        if not self.sizes:
            self.sizes.append(W.shape[1])
        n = W.shape[0]
        self.sizes.append(n)
        self.weights.append(W)
        self.biases.append(self._bias(node, n, layout))
        self.current = node.output[0]
        self.tensors.add(self.current)
        self.layers += 1

    def activation(self, node: onnx.NodeProto | None) -> None:
        if node is None:
            self.acts.append(Activation("identity"))
            return
        where = _where(node)
        if node.op_type not in ACTIVATION_OF or node.domain not in ("", "ai.onnx"):
            known = ", ".join(ACTIVATION_OF)
            raise ModelFormatError(
                f"{where}: op {node.op_type} is not an activation forwardpass reads ({known}) or a Gemm"
            )
        if list(node.input) != [self.current]:
            raise ModelFormatError(f"{where}: does not take the Gemm output {self.current!r}")
        name = ACTIVATION_OF[node.op_type]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        self.acts.append(Activation(name, PARAMETER_OF[name](attrs, self.layout, where)))
        self.current = node.output[0]
        self.tensors.add(self.current)

    def _bias(self, node: onnx.NodeProto, n: int, layout: str) -> np.ndarray:
        if len(node.input) < 3 or not node.input[2]:
            return np.zeros((n, 1))
        b = self._initializer(node, node.input[2], "bias")
        # Shapes that broadcast to one value per unit: along the last axis in rows, the first in columns.
        good = [(n,), (1, n)] if layout == "rows" else [(n, 1)]
        if b.shape not in good and not (n == 1 and b.size == 1 and b.ndim <= 2):
            expected = " or ".join(str(s) for s in good)
            raise ModelFormatError(
                f"{_where(node)}: bias {node.input[2]!r} has shape {b.shape}, which does not broadcast "
                f"one value per unit in {layout} layout; expected {expected}"
            )
        return b.reshape(n, 1)

    def _initializer(self, node: onnx.NodeProto, name: str, role: str) -> np.ndarray:
        if name not in self.inits:
            raise ModelFormatError(f"{_where(node)}: {role} {name!r} is not an initializer")
        tensor = self.inits[name]
        dtype = _dtype_name(tensor.data_type, f"{role} {name!r}")
        if dtype != self.dtype:
            raise ModelFormatError(f"{_where(node)}: {role} {name!r} is {dtype} but the input is {self.dtype}")
        return numpy_helper.to_array(tensor).astype(np.float64)


def _where(node: onnx.NodeProto) -> str:
    return f"node {node.name or node.output[0]!r} (op {node.op_type})"


def _dtype_name(elem_type: int, what: str) -> str:
    for name, code in DTYPES.items():
        if code == elem_type:
            return name
    raise ModelFormatError(f"{what} is {TensorProto.DataType.Name(elem_type)}; forwardpass reads float32 and float64")


def _default_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    raise ModelFormatError("the model imports no default-domain opset")
