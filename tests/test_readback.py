"""Reading .onnx files back into specs: ours, hand-made variants, and refusals that name the node."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from forwardpass.builder.graph import ExportOptions, build_model, serialize
from forwardpass.builder.readback import read_file, read_model
from forwardpass.builder.spec import ACTIVATIONS, Activation
from forwardpass.errors import Kind, ModelFormatError

from numerics import random_spec

ACTS = tuple(Activation(a) for a in ACTIVATIONS if a != "softmax")[:4] + (Activation("softmax"),)


@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("expose_hidden", [False, True])
@pytest.mark.parametrize("opset", [13, 17])
def test_round_trip_float64_is_exact(layout, expose_hidden, opset):
    spec = random_spec(np.random.default_rng(0), (3, 4, 5, 2, 6, 2), ACTS)  # softmax over two units
    options = ExportOptions(layout, "float64", opset, expose_hidden)
    back = read_model(build_model(spec, options))
    assert back.spec == spec
    assert back.options == options
    assert serialize(build_model(back.spec, back.options, "mlp_3_4_5_2_6_2")) == serialize(build_model(spec, options))


def test_round_trip_float32_holds_the_rounded_weights():
    spec = random_spec(np.random.default_rng(1), (3, 4, 1), (Activation("leaky_relu", 0.3), Activation("sigmoid")))
    back = read_model(build_model(spec, ExportOptions(dtype="float32")))
    assert back.dtype == "float32" and back.spec.activations == spec.activations
    for ours, theirs in zip(back.spec.weights + back.spec.biases, spec.weights + spec.biases):
        np.testing.assert_array_equal(ours, theirs.astype(np.float32))


def _hand_made(nodes, inits, inp=("inp", [None, 3]), out=("out", [None, 2]), elem=TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes,
        "hand",
        [helper.make_tensor_value_info(inp[0], elem, inp[1])],
        [helper.make_tensor_value_info(out[0], elem, out[1])],
        initializer=[
            numpy_helper.from_array(np.asarray(v, np.float32 if elem == TensorProto.FLOAT else np.float64), k)
            for k, v in inits.items()
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


W = np.arange(6, dtype=np.float32).reshape(2, 3) / 10  # the slides' W: (2 units, 3 inputs)
B = np.array([0.5, -0.5], np.float32)


def test_hand_made_rows_with_w_stored_transposed_and_no_activation():
    model = _hand_made([helper.make_node("Gemm", ["inp", "wt", "bias"], ["out"])], {"wt": W.T, "bias": B.reshape(1, 2)})
    back = read_model(model)
    assert back.layout == "rows" and back.spec.activations == (Activation("identity"),)
    np.testing.assert_array_equal(back.spec.weights[0], W)
    np.testing.assert_array_equal(back.spec.biases[0], B.reshape(2, 1))


def test_hand_made_columns_with_transa_and_no_bias():
    model = _hand_made(
        [helper.make_node("Gemm", ["wt", "inp"], ["z"], transA=1), helper.make_node("LeakyRelu", ["z"], ["out"])],
        {"wt": W.T},
        inp=("inp", [3, None]),
        out=("out", [2, None]),
        elem=TensorProto.DOUBLE,
    )
    back = read_model(model)
    assert back.layout == "columns" and back.dtype == "float64"
    assert back.spec.activations == (Activation("leaky_relu", 0.01),)  # ONNX's default alpha
    np.testing.assert_array_equal(back.spec.weights[0], W)
    np.testing.assert_array_equal(back.spec.biases[0], np.zeros((2, 1)))


def _refused(model, match):
    with pytest.raises(ModelFormatError, match=match):
        read_model(model)


def test_an_op_that_is_not_an_activation_is_named():
    nodes = [
        helper.make_node("Gemm", ["inp", "w", "b"], ["z"], transB=1, name="layer1"),
        helper.make_node("Softplus", ["z"], ["out"], name="soft"),
    ]
    _refused(_hand_made(nodes, {"w": W, "b": B}), r"node 'soft' \(op Softplus\)")


def test_a_graph_starting_with_another_op_is_named():
    nodes = [helper.make_node("Add", ["inp", "inp"], ["out"], name="adder")]
    _refused(_hand_made(nodes, {}, out=("out", [None, 3])), r"node 'adder' \(op Add\): expected a Gemm")


def test_gemm_with_alpha_is_refused():
    nodes = [helper.make_node("Gemm", ["inp", "w", "b"], ["out"], transB=1, alpha=2.0, name="scaled")]
    _refused(_hand_made(nodes, {"w": W, "b": B}), r"node 'scaled' \(op Gemm\): alpha and beta must be 1")


def test_a_column_bias_in_rows_layout_is_refused():
    nodes = [helper.make_node("Gemm", ["inp", "w", "b"], ["out"], transB=1, name="wrongbias")]
    _refused(_hand_made(nodes, {"w": W, "b": B.reshape(2, 1)}), r"wrongbias.*\(2, 1\).*expected \(2,\) or \(1, 2\)")


def test_weights_from_a_graph_input_are_refused():
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["inp", "w"], ["out"], transB=1, name="g")],
        "hand",
        [
            helper.make_tensor_value_info("inp", TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 2])],
    )
    _refused(helper.make_model(graph), "2 inputs besides its weights")


def test_integer_models_are_refused():
    nodes = [helper.make_node("Gemm", ["inp", "w", "b"], ["out"], transB=1)]
    model = _hand_made(nodes, {"w": W, "b": B})
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT32
    _refused(model, "INT32")


def test_mixed_dtypes_are_refused():
    nodes = [helper.make_node("Gemm", ["inp", "w", "b"], ["out"], transB=1, name="mixed")]
    model = _hand_made(nodes, {"w": W, "b": B})
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(B.astype(np.float64), "b"))
    _refused(model, "mixed.*float64 but the input is float32")


def test_a_missing_file_is_not_found(tmp_path):
    with pytest.raises(ModelFormatError, match="no such file") as info:
        read_file(tmp_path / "missing.onnx")
    assert info.value.kind is Kind.NOT_FOUND


def test_a_file_that_is_not_onnx_is_named(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    with pytest.raises(ModelFormatError, match="garbage.onnx: not an ONNX model"):
        read_file(path)


def test_a_file_with_an_empty_graph_is_refused(tmp_path):
    path = tmp_path / "empty.onnx"
    onnx.save(_hand_made([], {}, out=("inp", [None, 3])), path)
    with pytest.raises(ModelFormatError, match="empty.onnx: the graph has no Gemm"):
        read_file(path)
