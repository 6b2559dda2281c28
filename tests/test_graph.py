"""The ONNX graph: one Gemm and one activation per layer, named after the slides, valid, deterministic."""

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime
import pytest

import forwardpass
from forwardpass.builder.graph import (
    IR_FOR_OPSET,
    ExportOptions,
    build_columns_inside,
    build_model,
    check,
    ir_version,
    newest_opset,
    serialize,
)
from forwardpass.builder.spec import Activation
from forwardpass.errors import SpecError

from numerics import random_spec

ACTS = (Activation("relu"), Activation("leaky_relu"), Activation("tanh"), Activation("sigmoid"), Activation("identity"))


@pytest.fixture
def spec():
    return random_spec(np.random.default_rng(0), (3, 4, 5, 2, 6, 1), ACTS)


def test_one_gemm_and_one_activation_per_layer(spec):
    graph = build_model(spec).graph
    assert [n.op_type for n in graph.node] == [
        "Gemm", "Relu", "Gemm", "LeakyRelu", "Gemm", "Tanh", "Gemm", "Sigmoid", "Gemm", "Identity",
    ]  # fmt: skip
    assert [n.name for n in graph.node] == ["Z1", "A1", "Z2", "A2", "Z3", "A3", "Z4", "A4", "Z5", "y"]
    assert [t.name for t in graph.initializer] == [f"{k}{l}" for l in range(1, 6) for k in "Wb"]
    leaky = graph.node[3]
    assert onnx.helper.get_attribute_value(leaky.attribute[0]) == pytest.approx(0.01)


def test_rows_layout_transposes_w_and_flattens_b(spec):
    graph = build_model(spec).graph
    gemm = graph.node[0]
    assert list(gemm.input) == ["x", "W1", "b1"]
    assert [(a.name, a.i) for a in gemm.attribute] == [("transB", 1)]
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    assert shapes["W1"] == (4, 3) and shapes["b1"] == (4,)


def test_columns_layout_is_the_slides_verbatim(spec):
    graph = build_model(spec, ExportOptions(layout="columns")).graph
    gemm = graph.node[0]
    assert list(gemm.input) == ["W1", "X", "b1"] and not gemm.attribute
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    assert shapes["W1"] == (4, 3) and shapes["b1"] == (4, 1)
    assert [o.name for o in graph.output] == ["Y"]


@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_dimension_is_symbolic_and_types_follow_dtype(spec, layout, dtype):
    model = build_model(spec, ExportOptions(layout=layout, dtype=dtype))
    elem = onnx.TensorProto.FLOAT if dtype == "float32" else onnx.TensorProto.DOUBLE

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    (inp,), (out,) = model.graph.input, model.graph.output
    assert dims(inp) == (["batch", 3] if layout == "rows" else [3, "batch"])
    assert dims(out) == (["batch", 1] if layout == "rows" else [1, "batch"])
    assert inp.type.tensor_type.elem_type == elem == out.type.tensor_type.elem_type
    assert all(t.data_type == elem for t in model.graph.initializer)


@pytest.mark.parametrize("opset", range(13, newest_opset() + 1))
def test_every_opset_passes_the_full_check_and_shape_inference(spec, opset):
    model = build_model(spec, ExportOptions(opset=opset, expose_hidden=True))
    check(model)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    assert model.ir_version == ir_version(opset)
    assert model.opset_import[0].version == opset
    assert len(inferred.graph.output) == 10


def test_ir_version_is_fixed_per_opset_not_taken_from_onnx():
    assert IR_FOR_OPSET[17] == 8 and IR_FOR_OPSET[13] == 7
    for opset, ir in IR_FOR_OPSET.items():
        if opset <= newest_opset():
            assert ir == onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [12, newest_opset() + 1, "17"])
def test_opset_out_of_range_is_refused(opset):
    with pytest.raises(SpecError, match="opset"):
        ExportOptions(opset=opset)


@pytest.mark.parametrize(("field", "value"), [("layout", "diagonal"), ("dtype", "float16")])
def test_unknown_layout_or_dtype_is_refused(field, value):
    with pytest.raises(SpecError, match=value):
        ExportOptions(**{field: value})


def test_metadata_and_doc_string(spec):
    model = build_model(spec, ExportOptions(layout="columns"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["producer"] == "forwardpass" and meta["layout"] == "columns"
    assert meta["activations"] == "relu,leaky_relu:0.01,tanh,sigmoid,identity"
    assert json.loads(meta["spec"])["sizes"] == [3, 4, 5, 2, 6, 1]
    assert model.producer_name == "forwardpass"
    assert "Z[l] = W[l] A[l-1] + b[l]" in model.graph.doc_string


def test_export_is_deterministic_and_version_free(spec):
    first, second = serialize(build_model(spec)), serialize(build_model(spec))
    assert first == second
    model = onnx.load_from_string(first)
    assert model.producer_version == ""
    for version in {onnx.__version__, forwardpass.__version__}:
        assert version.encode() not in first


def test_hidden_outputs_are_named_after_the_slides(spec):
    model = build_model(spec, ExportOptions(expose_hidden=True))
    names = [o.name for o in model.graph.output]
    assert names[0] == "y"
    assert names[1:] == ["Z1", "A1", "Z2", "A2", "Z3", "A3", "Z4", "A4", "Z5"]


@pytest.mark.parametrize("hidden", [False, True])
def test_columns_inside_has_the_rows_models_inputs_and_outputs(spec, hidden):
    options = ExportOptions(expose_hidden=hidden)
    rows, inside = build_model(spec, options), build_columns_inside(spec, options)
    check(inside)
    assert [(i.name, i.type) for i in inside.graph.input] == [(i.name, i.type) for i in rows.graph.input]
    assert [(o.name, o.type) for o in inside.graph.output] == [(o.name, o.type) for o in rows.graph.output]
    ops = [n.op_type for n in inside.graph.node]
    assert ops[0] == "Transpose" and ops.count("Transpose") == 1 + len(rows.graph.output)
    assert all(not a.name == "transB" for n in inside.graph.node for a in n.attribute)  # columns Gemms


def test_columns_inside_takes_rows_options_only(spec):
    with pytest.raises(SpecError, match="rows-layout"):
        build_columns_inside(spec, ExportOptions(layout="columns"))


@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weights_as_inputs_take_the_slides_shapes_and_compute_the_stored_graphs_outputs(spec, layout, dtype):
    stored = ExportOptions(layout, dtype, expose_hidden=True)
    options = dataclasses.replace(stored, weights_as_inputs=True)
    model = build_model(spec, options)
    check(model)
    assert serialize(model) == serialize(build_model(spec, options))
    assert not model.graph.initializer
    code = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    fed = [(i.name, i.type.tensor_type.elem_type, [d.dim_value for d in i.type.tensor_type.shape.dim])
           for i in model.graph.input[1:]]  # fmt: skip
    assert fed == [(f"{k}{l}", code, list(spec.shape_of(f"{k}{l}"))) for l in range(1, spec.depth + 1) for k in "Wb"]
    assert [o.name for o in model.graph.output] == [o.name for o in build_model(spec, stored).graph.output]
    weights = {f"{k}{l}": a.astype(dtype) for l in range(1, spec.depth + 1) for k, a in (("W", spec.weights[l - 1]),
               ("b", spec.biases[l - 1]))}  # fmt: skip
    # onnxruntime packs a stored W for its Gemm kernel, whose sums for one row in rows layout round
    # differently from the unpacked kernel's (a last bit of float32): with packing off both graphs run
    # the same kernel, and must then agree bit for bit.
    unpacked = onnxruntime.SessionOptions()
    unpacked.add_session_config_entry("session.disable_prepacking", "1")
    served = onnxruntime.InferenceSession(
        serialize(build_model(spec, stored)), unpacked, providers=["CPUExecutionProvider"]
    )
    editable = onnxruntime.InferenceSession(serialize(model), providers=["CPUExecutionProvider"])
    for m in (1, 7, 1000):  # onnxruntime's Gemm takes other paths for one row and for many
        X = np.random.default_rng(m).standard_normal((m, spec.sizes[0])).astype(dtype)
        x = {stored.input_name: X if layout == "rows" else np.ascontiguousarray(X.T)}
        for got, want in zip(editable.run(None, {**x, **weights}), served.run(None, x)):
            np.testing.assert_array_equal(got, want)  # the same numbers, bit for bit
