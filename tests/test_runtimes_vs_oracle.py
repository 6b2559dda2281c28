"""onnxruntime and onnx's ReferenceEvaluator against the oracle: every activation in every position,
both layouts, both dtypes, batch sizes from 1 to 65,536, and hypothesis over random networks."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwardpass.builder.spec import ACTIVATIONS, OUTPUT_ONLY, Activation
from forwardpass.runtime import Runtime

from numerics import assert_matches_oracle, feed, model_bytes, random_input, random_spec, reference_run, unfeed

LAYOUTS = ("rows", "columns")
DTYPES = ("float32", "float64")
BATCHES = (1, 2, 7, 1024, 65536)
ALL = [Activation(name, 0.2 if name == "leaky_relu" else None) for name in ACTIVATIONS]
HIDDEN = [a for a in ALL if a.name not in OUTPUT_ONLY]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("output", ALL, ids=str)
@pytest.mark.parametrize("hidden", HIDDEN, ids=str)
def test_every_activation_in_every_position(hidden, output, layout, dtype):
    rng = np.random.default_rng(7)
    units = 2 if output.name == "softmax" else 1  # softmax over one unit is refused: it is always 1
    spec = random_spec(rng, (3, 4, units), (hidden, output), scale=2.0)
    data = model_bytes(spec, layout=layout, dtype=dtype)
    runtime = Runtime(data, provider="cpu")
    for m in BATCHES:
        X = random_input(rng, 3, m, dtype)
        assert_matches_oracle(spec, X, unfeed(runtime.predict(feed(X, layout)), layout), dtype)
        if m <= 1024:  # the reference evaluator is plain NumPy: one large batch is enough below
            assert_matches_oracle(spec, X, unfeed(reference_run(data, feed(X, layout))[0], layout), dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_evaluator_on_a_large_batch(layout):
    rng = np.random.default_rng(8)
    spec = random_spec(rng, (3, 4, 1), (Activation("relu"), Activation("sigmoid")))
    X = random_input(rng, 3, 65536, "float32")
    out = reference_run(model_bytes(spec, layout=layout), feed(X, layout))[0]
    assert_matches_oracle(spec, X, unfeed(out, layout), "float32")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batch_equal_to_width_is_not_broadcast_wrongly(layout):
    # A (n, 1) bias in rows layout broadcasts across the batch; it shows when batch == n.
    rng = np.random.default_rng(9)
    spec = random_spec(rng, (3, 4, 4), (Activation("identity"), Activation("identity")))
    X = random_input(rng, 3, 4, "float64")
    out = Runtime(model_bytes(spec, layout=layout, dtype="float64"), provider="cpu").predict(feed(X, layout))
    assert_matches_oracle(spec, X, unfeed(out, layout), "float64")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_hidden_outputs_match_every_layer(layout):
    rng = np.random.default_rng(10)
    spec = random_spec(rng, (3, 5, 4, 2), (Activation("relu"), Activation("tanh"), Activation("sigmoid")))
    data = model_bytes(spec, layout=layout, dtype="float64", expose_hidden=True)
    runtime = Runtime(data, provider="cpu")
    X = random_input(rng, 3, 9, "float64")
    outputs = runtime.run(feed(X, layout))
    assert list(outputs) == [runtime.output_names[0], "Z1", "A1", "Z2", "A2", "Z3"]
    for name in ("Z1", "A1", "Z2", "A2", "Z3"):
        assert_matches_oracle(spec, X, unfeed(outputs[name], layout), "float64", layer=name)
    reference = dict(zip(runtime.output_names, reference_run(data, feed(X, layout))))
    for name in ("Z1", "A2"):
        assert_matches_oracle(spec, X, unfeed(reference[name], layout), "float64", layer=name)


activations = st.builds(Activation, st.sampled_from(("sigmoid", "tanh", "relu", "identity", "linear"))) | st.builds(
    Activation, st.just("leaky_relu"), st.none() | st.floats(0.0, 1.0)
)


@st.composite
def networks(draw):
    depth = draw(st.integers(1, 6))
    sizes = tuple(draw(st.lists(st.integers(1, 64), min_size=depth + 1, max_size=depth + 1)))
    acts = tuple(draw(st.lists(activations, min_size=depth, max_size=depth)))
    if sizes[-1] > 1 and draw(st.booleans()):  # a classifier's output: softmax over the last layer's units
        acts = acts[:-1] + (Activation("softmax"),)
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0]))  # 4.0 drives sigmoid and tanh deep into saturation
    return random_spec(np.random.default_rng(seed), sizes, acts, scale), seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    net=networks(),
    layout=st.sampled_from(LAYOUTS),
    dtype=st.sampled_from(DTYPES),
    m=st.integers(1, 300),
    input_scale=st.sampled_from([1.0, 100.0]),
)
def test_random_networks_match_the_oracle(net, layout, dtype, m, input_scale):
    spec, seed = net
    X = random_input(np.random.default_rng(seed + 1), spec.sizes[0], m, dtype, input_scale)
    data = model_bytes(spec, layout=layout, dtype=dtype)
    assert_matches_oracle(spec, X, unfeed(Runtime(data, provider="cpu").predict(feed(X, layout)), layout), dtype)
    assert_matches_oracle(spec, X, unfeed(reference_run(data, feed(X, layout))[0], layout), dtype)
