"""The network description: validation, initializers, .npz weights, the slides' warnings."""

import warnings

import numpy as np
import pytest

from forwardpass.builder.init import initialize
from forwardpass.builder.npz import load_npz, npz_bytes
from forwardpass.builder.spec import Activation, NetworkSpec, parse_activations
from forwardpass.errors import Kind, SpecError


def test_linear_is_an_alias_of_identity():
    assert Activation("linear") == Activation("identity")


def test_leaky_relu_defaults_to_the_slides_slope():
    assert Activation("leaky_relu").alpha == pytest.approx(0.01)
    assert Activation.parse("leaky_relu:0.2").alpha == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("swish", "unknown activation 'swish'"),
        ("relu:0.1", "takes no alpha"),
        ("leaky_relu:x", "not a number"),
        ("leaky_relu:nan", "finite"),
    ],
)
def test_bad_activations_are_named(text, match):
    with pytest.raises(SpecError, match=match):
        Activation.parse(text)


def test_default_activations_follow_the_slides():
    assert [a.name for a in parse_activations(None, 3)] == ["relu", "relu", "sigmoid"]
    assert [a.name for a in parse_activations("tanh", 2)] == ["tanh", "tanh"]
    with pytest.raises(SpecError, match="3 layers need 1 or 3 activations, got 2"):
        parse_activations("relu,relu", 3)


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ((3,), "at least an input and an output"),
        ((3, 0, 1), "size 1 must be a positive int"),
        ((3, 2.5, 1), "size 1"),
        ((3, True), "size 1"),
    ],
)
def test_bad_sizes_are_named(sizes, match):
    with pytest.raises(SpecError, match=match):
        initialize(sizes, parse_activations(None, max(len(sizes) - 1, 1)))


def test_weight_shapes_are_the_slides():
    spec = initialize((3, 4, 1), parse_activations(None, 2), "small", seed=1)
    assert [w.shape for w in spec.weights] == [(4, 3), (1, 4)]
    assert [b.shape for b in spec.biases] == [(4, 1), (1, 1)]
    assert np.abs(spec.weights[0]).max() < 0.05  # randn * 0.01
    assert not spec.weights[0].flags.writeable


def test_a_wrong_shape_names_the_layer_and_both_shapes():
    with pytest.raises(SpecError, match=r"layer 2: W2 has shape \(4, 1\), expected \(1, 4\)"):
        NetworkSpec(
            (3, 4, 1),
            parse_activations(None, 2),
            (np.ones((4, 3)), np.ones((4, 1))),
            (np.ones((4, 1)), np.ones((1, 1))),
        )


@pytest.mark.parametrize("activations", ["relu,softmax", "softmax"])
def test_softmax_over_one_output_unit_is_refused_with_the_sigmoid_hint(activations):
    """Softmax over one unit is 1 for every input: a classifier that always says yes."""
    depth = activations.count(",") + 1
    with pytest.raises(SpecError, match=f"layer {depth}: softmax over one output unit always answers 1; for two "
                       "classes use sigmoid over one unit"):  # fmt: skip
        initialize((3, 4, 1)[-depth - 1 :], parse_activations(activations, depth))
    initialize((3, 4, 2)[-depth - 1 :], parse_activations(activations, depth))  # over two units it is a classifier


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_weights_are_refused(bad):
    W1 = np.ones((4, 3))
    W1[2, 1] = bad
    with pytest.raises(SpecError, match="layer 1: W1 contains NaN or inf"):
        NetworkSpec((3, 4, 1), parse_activations(None, 2), (W1, np.ones((1, 4))), (np.ones((4, 1)), np.ones((1, 1))))


def test_sigmoid_in_a_hidden_layer_is_warned_about():
    spec = initialize((3, 4, 4, 1), parse_activations("tanh,relu,sigmoid", 3))
    assert spec.hidden_saturating() == [1]
    with pytest.warns(UserWarning, match="layer 1 is hidden and uses tanh"):
        spec.warn_if_saturating()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        initialize((3, 1), parse_activations("sigmoid", 1)).warn_if_saturating()  # an output sigmoid is fine


@pytest.mark.parametrize("method", ["small", "he", "xavier"])
def test_initializers_are_seeded(method):
    acts = parse_activations(None, 2)
    assert initialize((3, 4, 1), acts, method, 5) == initialize((3, 4, 1), acts, method, 5)
    assert initialize((3, 4, 1), acts, method, 5) != initialize((3, 4, 1), acts, method, 6)


def test_unknown_initializer():
    with pytest.raises(SpecError, match="unknown initializer 'glorot'"):
        initialize((3, 1), parse_activations(None, 1), "glorot")


def test_npz_round_trip_is_exact_and_deterministic(tmp_path):
    spec = initialize((3, 4, 2), parse_activations("relu,tanh", 2), "he", 3)
    path = tmp_path / "w.npz"
    path.write_bytes(npz_bytes(spec))
    assert load_npz(path, spec.activations) == spec
    assert npz_bytes(spec) == path.read_bytes()


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_wrong_shape_names_layer_and_shapes(tmp_path):
    path = _write_npz(tmp_path / "w.npz", W1=np.ones((4, 3)), b1=np.ones((4,)), W2=np.ones((1, 4)), b2=np.ones((1, 1)))
    with pytest.raises(SpecError, match=r"w.npz: layer 1: b1 has shape \(4,\), expected \(4, 1\)"):
        load_npz(path)


def test_npz_missing_array_is_named(tmp_path):
    path = _write_npz(tmp_path / "w.npz", W1=np.ones((4, 3)), W2=np.ones((1, 4)), b2=np.ones((1, 1)))
    with pytest.raises(SpecError, match=r"missing \['b1'\]"):
        load_npz(path)


def test_npz_sizes_must_agree(tmp_path):
    path = _write_npz(tmp_path / "w.npz", W1=np.ones((4, 3)), b1=np.ones((4, 1)))
    with pytest.raises(SpecError, match=r"sizes \[3, 5\] given, but the weights have sizes \[3, 4\]"):
        load_npz(path, sizes=(3, 5))


def test_npz_with_pickles_is_refused(tmp_path):
    path = _write_npz(tmp_path / "w.npz", W1=np.array([{"evil": 1}], dtype=object), b1=np.ones((1, 1)))
    with pytest.raises(SpecError, match="not a readable .npz"):
        load_npz(path)


def test_npz_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such file") as info:
        load_npz(tmp_path / "none.npz")
    assert info.value.kind is Kind.NOT_FOUND
