"""The oracle against values worked out by hand from the slides' equations."""

import numpy as np
import pytest

from forwardpass.builder.oracle import forward
from forwardpass.builder.spec import Activation, NetworkSpec

# 2-2-1 network. Example 1: x = (1, 2), so Z1 = W1 x + b1 = (1 - 2 + 0, 2 + 0 - 1) = (-1, 1).
# Example 2: x = (0, 0), so Z1 = b1 = (0, -1): the bias is broadcast across the columns.
W1 = [[1.0, -1.0], [2.0, 0.0]]
b1 = [[0.0], [-1.0]]
X = np.array([[1.0, 0.0], [2.0, 0.0]])
W2 = [[1.0, 1.0]]
b2 = [[0.5]]
E = np.e
# leaky_relu's slope 0.01 as ONNX stores it, in float32; the spec rounds it the same way so that the
# oracle computes what the graph computes.
ALPHA = float(np.float32(0.01))

HIDDEN = {  # g(Z1) for both examples, by hand
    "relu": [[0.0, 0.0], [1.0, 0.0]],
    "leaky_relu": [[-ALPHA, 0.0], [1.0, -ALPHA]],
    "identity": [[-1.0, 0.0], [1.0, -1.0]],
    "sigmoid": [[1 / (1 + E), 0.5], [1 / (1 + 1 / E), 1 / (1 + E)]],
    "tanh": [[-(E - 1 / E) / (E + 1 / E), 0.0], [(E - 1 / E) / (E + 1 / E), -(E - 1 / E) / (E + 1 / E)]],
}


@pytest.mark.parametrize("hidden", sorted(HIDDEN))
def test_hidden_activation_by_hand(hidden):
    spec = NetworkSpec((2, 2, 1), (Activation(hidden), Activation("identity")), (W1, W2), (b1, b2))
    result = forward(spec, X)
    np.testing.assert_allclose(result.Z[1], [[-1.0, 0.0], [1.0, -1.0]], rtol=0, atol=0)
    np.testing.assert_allclose(result.A[1], HIDDEN[hidden], rtol=1e-15, atol=1e-15)
    # Z2 = a1_1 + a1_2 + 0.5; the output is linear
    expected = np.sum(HIDDEN[hidden], axis=0, keepdims=True) + 0.5
    np.testing.assert_allclose(result.output, expected, rtol=1e-15, atol=1e-15)


# relu hidden: A1 = (0, 1) for example 1, so Z2 = 1 + b2. With b2 = 0.5, Z2 = 1.5; with b2 = -2.5, Z2 = -1.5.
OUTPUT = {
    "relu": (1.5, 0.0),
    "leaky_relu": (1.5, -1.5 * ALPHA),
    "identity": (1.5, -1.5),
    "sigmoid": (1 / (1 + np.exp(-1.5)), 1 / (1 + np.exp(1.5))),
    "tanh": (np.tanh(1.5), -np.tanh(1.5)),
}


@pytest.mark.parametrize("output", sorted(OUTPUT))
def test_output_activation_by_hand(output):
    for b, expected in zip(([[0.5]], [[-2.5]]), OUTPUT[output]):
        spec = NetworkSpec((2, 2, 1), (Activation("relu"), Activation(output)), (W1, W2), (b1, b))
        assert forward(spec, X[:, :1]).output[0, 0] == pytest.approx(expected, rel=1e-15, abs=1e-15)


def test_sigmoid_saturates_without_warnings():
    spec = NetworkSpec((1, 1), (Activation("sigmoid"),), ([[1.0]],), ([[0.0]],))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = forward(spec, np.array([[-1000.0, 0.0, 1000.0]])).output
    np.testing.assert_array_equal(out, [[0.0, 0.5, 1.0]])


def test_forward_keeps_every_layer():
    spec = NetworkSpec((2, 2, 1), (Activation("relu"), Activation("identity")), (W1, W2), (b1, b2))
    result = forward(spec, X)
    assert len(result.Z) == len(result.A) == 3
    assert result.A[0] is not None and result.Z[0] is None
    assert result.A[2].shape == (1, 2)


def test_oracle_imports_no_onnx_code():
    import ast
    from pathlib import Path

    import forwardpass.builder.oracle as oracle

    tree = ast.parse(Path(oracle.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any("onnx" in name or "graph" in name or "readback" in name for name in imported), imported
