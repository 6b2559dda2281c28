"""A NetworkSpec as an ONNX graph: per layer one Gemm (Z[l]) and one activation node (A[l]).

Two layouts:
  rows     input x [batch, n0], Z = Gemm(A, W, b, transB=1), b stored (n_l,)   -> y [batch, nL]
  columns  input X [n0, batch], Z = Gemm(W, A, b), b stored (n_l, 1)           -> Y [nL, batch]
In rows, b must be (n_l,): a (n_l, 1) bias passes the checker but broadcasts along the wrong
axis, a silent error whenever batch == n_l.

With weights_as_inputs, W{l} [n_l, n_{l-1}] and b{l} [n_l, 1] are graph inputs, in the slides'
shapes in both layouts, instead of stored tensors: rows transposes b{l} to [1, n_l] for its Gemm.

The bytes depend only on the spec and the options: no onnx or forwardpass version goes in them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from forwardpass.dtypes import DTYPES as ALL_DTYPES
from forwardpass.errors import SpecError

from .spec import NetworkSpec

LAYOUTS = ("rows", "columns")
DTYPES = {d.name: d.onnx for d in ALL_DTYPES}  # our name -> TensorProto code
DEFAULT_OPSET = 17
MIN_OPSET = 13  # Gemm, Sigmoid and Tanh took their current form at 13
GRAPH_FORMAT = "1"  # bumped only when forwardpass changes what it writes for the same spec
PRODUCER = "forwardpass"
INSIDE = "_columns"  # suffix of the tensors inside build_columns_inside's graph

# The oldest IR version that may carry each opset (onnx's release table): fixed here so the bytes
# do not change with the installed onnx.
IR_FOR_OPSET = {
    13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9,
    21: 10, 22: 10, 23: 11, 24: 12, 25: 13, 26: 13, 27: 13, 28: 14,
}  # fmt: skip

# The ONNX op of each name in spec.ACTIVATIONS, and the attributes (from alpha and whether the
# layout is rows) that its node carries.
ONNX_OP = {
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "relu": "Relu",
    "leaky_relu": "LeakyRelu",
    "identity": "Identity",
    "softmax": "Softmax",
}
ONNX_ATTRIBUTES = {
    "sigmoid": lambda alpha, rows: {},
    "tanh": lambda alpha, rows: {},
    "relu": lambda alpha, rows: {},
    "leaky_relu": lambda alpha, rows: {"alpha": alpha},
    "identity": lambda alpha, rows: {},
    # over the units: the last axis in rows, the first in columns
    "softmax": lambda alpha, rows: {"axis": 1 if rows else 0},
}


@dataclass(frozen=True)
class ExportOptions:
    """How a spec is written: layout, dtype, opset, whether Z[l], A[l] become outputs, and whether
    W[l], b[l] become inputs (a graph whose weights its caller feeds: the page's editable network)."""

    layout: str = "rows"
    dtype: str = "float32"
    opset: int = DEFAULT_OPSET
    expose_hidden: bool = False
    weights_as_inputs: bool = False

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise SpecError(f"unknown layout {self.layout!r}; known: {', '.join(LAYOUTS)}")
        if self.dtype not in DTYPES:
            raise SpecError(f"unknown dtype {self.dtype!r}; known: {', '.join(DTYPES)}")
        newest = newest_opset()
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or not MIN_OPSET <= self.opset <= newest:
            raise SpecError(
                f"opset {self.opset!r} is out of range: {MIN_OPSET} to {newest} (the installed onnx's newest)"
            )

    @property
    def input_name(self) -> str:
        return "x" if self.layout == "rows" else "X"

    @property
    def output_name(self) -> str:
        return "y" if self.layout == "rows" else "Y"


def newest_opset() -> int:
    """The newest default-domain opset the installed onnx knows."""
    return onnx.defs.onnx_opset_version()


def ir_version(opset: int) -> int:
    """The IR version written for an opset: our table, or onnx's for opsets newer than it."""
    if opset in IR_FOR_OPSET:
        return IR_FOR_OPSET[opset]
    return helper.find_min_ir_version_for([helper.make_opsetid("", opset)])


def default_name(spec: NetworkSpec) -> str:
    """mlp_3_4_1 for sizes (3, 4, 1)."""
    return "mlp_" + "_".join(str(n) for n in spec.sizes)


def build_model(
    spec: NetworkSpec, options: ExportOptions = ExportOptions(), name: str | None = None
) -> onnx.ModelProto:
    """The ONNX model of a spec: one Gemm and one activation node per layer."""
    nodes, initializers = _layers(spec, options, options.input_name, "")
    inputs = []
    if options.weights_as_inputs:
        inputs = [helper.make_tensor_value_info(t.name, DTYPES[options.dtype], _slides_shape(t)) for t in initializers]
        initializers = []
        if options.layout == "rows":  # the rows Gemm adds b as a row: b{l} [n_l, 1] -> [1, n_l]
            nodes = [node for n in nodes for node in _bias_as_row(n)]
    model = _model(spec, options, nodes, initializers, name or default_name(spec), _doc(spec, options), inputs)
    helper.set_model_props(model, _metadata(spec, options))
    return model


def build_columns_inside(
    spec: NetworkSpec, options: ExportOptions, tensor: Callable[[np.ndarray, str], onnx.TensorProto] | None = None
) -> onnx.ModelProto:
    """A rows-layout model's equivalent that computes in columns layout: x [batch, n0] -> Transpose
    -> the columns Gemms and activations -> Transpose -> y [batch, nL], with the same input, outputs
    (hidden ones too, each transposed back to [batch, n_l]), names and shapes as build_model's.

    onnxruntime's CPU Gemm blocks its output columns 16 wide; in rows layout those columns are the
    n_l units (4 and 1 for 3-4-1), in columns layout the batch, so a large batch runs several times
    faster this way even with both transposes (bench/local.py). The runtime derives it from the
    read-back spec; it is never written to a file, which stays the slides' one Gemm per layer.
    `tensor` makes each initializer from its array and name (numpy_helper.from_array by default):
    the runtime keeps a large model's weights out of the graph with it.
    """
    if options.layout != "rows":
        raise SpecError("build_columns_inside takes rows-layout options: it is the rows model's equivalent")
    columns = ExportOptions("columns", options.dtype, options.opset)
    inside = f"{columns.input_name}{INSIDE}"
    nodes, initializers = _layers(spec, columns, inside, INSIDE, tensor or numpy_helper.from_array)
    last = f"{columns.output_name}{INSIDE}"
    nodes[-1].output[0] = nodes[-1].name = last
    outputs = [options.output_name] + [out for out, _ in output_widths(spec, options)[1:]]
    nodes.insert(0, _transpose(options.input_name, inside))
    nodes += [_transpose(last if out == options.output_name else out + INSIDE, out) for out in outputs]
    return _model(spec, options, nodes, initializers, default_name(spec) + "_columns_inside", "")


def _layers(
    spec: NetworkSpec, options: ExportOptions, a: str, suffix: str, tensor=numpy_helper.from_array
) -> tuple[list, list]:
    """Each layer's Gemm and activation nodes, and the weights they read; `suffix` goes on every
    tensor a node makes but the output."""
    dtype = np.dtype(options.dtype)
    rows = options.layout == "rows"
    nodes, initializers = [], []
    for l, (W, b, act) in enumerate(zip(spec.weights, spec.biases, spec.activations), 1):
        bias = b.reshape(-1) if rows else b
        initializers += [
            tensor(W.astype(dtype), f"W{l}"),
            tensor(bias.astype(dtype), f"b{l}"),
        ]
        z = f"Z{l}{suffix}"
        gemm_inputs = [a, f"W{l}", f"b{l}"] if rows else [f"W{l}", a, f"b{l}"]
        nodes.append(helper.make_node("Gemm", gemm_inputs, [z], name=z, **({"transB": 1} if rows else {})))
        a = options.output_name if l == spec.depth else f"A{l}{suffix}"
        attrs = _attributes(act.name, act.alpha, rows)
        nodes.append(helper.make_node(ONNX_OP[act.name], [z], [a], name=a, **attrs))
    return nodes, initializers


def _model(spec: NetworkSpec, options: ExportOptions, nodes: list, initializers: list, name: str, doc: str, inputs=()):
    graph = helper.make_graph(
        nodes,
        name,
        [_tensor_type(options.input_name, spec.sizes[0], options), *inputs],
        [_tensor_type(out, width, options) for out, width in output_widths(spec, options)],
        initializer=initializers,
        doc_string=doc,
    )
    return onnx.ModelProto(
        ir_version=ir_version(options.opset),
        producer_name=PRODUCER,
        graph=graph,
        opset_import=[helper.make_opsetid("", options.opset)],
    )


def _transpose(source: str, target: str) -> onnx.NodeProto:
    return helper.make_node("Transpose", [source], [target], name=target, perm=[1, 0])


def _slides_shape(tensor: onnx.TensorProto) -> list[int]:
    """W{l}'s shape [n_l, n_{l-1}], or b{l}'s as a column [n_l, 1] whatever the layout stores."""
    return list(tensor.dims) if tensor.name.startswith("W") else [tensor.dims[0], 1]


def _bias_as_row(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """A rows Gemm that reads b{l} as fed, [n_l, 1], through a Transpose to [1, n_l]; other nodes as they are."""
    if node.op_type != "Gemm":
        return [node]
    bias = node.input[2]
    node.input[2] = f"{bias}_row"
    return [_transpose(bias, node.input[2]), node]


def output_widths(spec: NetworkSpec, options: ExportOptions) -> list[tuple[str, int]]:
    """The graph's outputs and their widths: y (or Y), then with expose_hidden every Z[l] and every
    A[l] but the last, which is y."""
    outputs = [(options.output_name, spec.sizes[-1])]
    if options.expose_hidden:
        for l, n in enumerate(spec.sizes[1:], 1):
            outputs += [(f"Z{l}", n)] + ([(f"A{l}", n)] if l < spec.depth else [])
    return outputs


def serialize(model: onnx.ModelProto) -> bytes:
    """The model's bytes, fields in number order, so equal models give equal files."""
    return model.SerializeToString(deterministic=True)


def check(model: onnx.ModelProto) -> None:
    """onnx's full check (types and shapes included); raises onnx's ValidationError."""
    onnx.checker.check_model(model, full_check=True)


def _attributes(name: str, alpha: float | None, rows: bool) -> dict:
    return ONNX_ATTRIBUTES[name](alpha, rows)


def _tensor_type(name: str, width: int, options: ExportOptions) -> onnx.ValueInfoProto:
    shape = ["batch", width] if options.layout == "rows" else [width, "batch"]
    return helper.make_tensor_value_info(name, DTYPES[options.dtype], shape)


def _metadata(spec: NetworkSpec, options: ExportOptions) -> dict[str, str]:
    return {
        "producer": PRODUCER,
        "forwardpass.graph_format": GRAPH_FORMAT,
        "layout": options.layout,
        "activations": ",".join(str(a) for a in spec.activations),
        "spec": spec.to_json(),
    }


def _doc(spec: NetworkSpec, options: ExportOptions) -> str:
    sizes = "-".join(str(n) for n in spec.sizes)
    if options.layout == "rows":
        shape = f"x [batch, {spec.sizes[0]}] -> y [batch, {spec.sizes[-1]}], one example per row"
        eq = "Z[l] = A[l-1] W[l]^T + b[l] (Gemm transB=1), the slides' equation transposed"
    else:
        shape = f"X [{spec.sizes[0]}, batch] -> Y [{spec.sizes[-1]}, batch], one example per column"
        eq = "Z[l] = W[l] A[l-1] + b[l] (Gemm), as the slides write it"
    acts = ", ".join(str(a) for a in spec.activations)
    return f"A {sizes} fully-connected network built by forwardpass. {shape}. {eq}; A[l] = g[l](Z[l]) with g = {acts}."
