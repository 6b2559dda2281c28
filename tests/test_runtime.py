"""The onnxruntime wrapper: input checks, providers, thread safety, clear errors."""

import logging
import subprocess
import sys

import numpy as np
import onnx
import pytest

from forwardpass.builder.graph import newest_opset
from forwardpass.builder.spec import Activation
from forwardpass.errors import InputError, Kind, ModelFormatError, ProviderError
from forwardpass.runtime import LARGE_BATCH, Runtime, cuda_offered

from harness import in_threads
from numerics import assert_matches_oracle, feed, model_bytes, random_input, random_spec, unfeed

ACTS = (Activation("relu"), Activation("sigmoid"))


@pytest.fixture(scope="module")
def spec():
    return random_spec(np.random.default_rng(0), (3, 4, 1), ACTS)


@pytest.fixture(scope="module")
def runtime(spec):
    return Runtime(model_bytes(spec), provider="cpu", threads=1)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.ones((2, 4), np.float32), r"input 'x' has shape \(2, 4\), expected \(batch, 3\)"),
        (np.ones(3, np.float32), r"has shape \(3,\), expected \(batch, 3\)"),
        (np.ones((1, 2, 3), np.float32), r"has shape \(1, 2, 3\)"),
        (np.ones((2, 3), np.float64), "input 'x' is float64, the model takes float32"),
        ([[1.0, 2.0, 3.0]], "must be a numpy array, got list"),
    ],
)
def test_bad_input_names_expected_and_received(runtime, x, match):
    with pytest.raises(InputError, match=match):
        runtime.predict(x)


def test_columns_input_is_checked_on_its_own_axis(spec):
    runtime = Runtime(model_bytes(spec, layout="columns"), provider="cpu")
    with pytest.raises(InputError, match=r"input 'X' has shape \(5, 3\), expected \(3, batch\)"):
        runtime.predict(np.ones((5, 3), np.float32))


def test_unknown_output_is_not_found(runtime):
    with pytest.raises(InputError, match="unknown output 'Z9'") as info:
        runtime.run(np.ones((1, 3), np.float32), ["Z9"])
    assert info.value.kind is Kind.NOT_FOUND


def test_changing_batch_sizes_and_non_contiguous_input(runtime, spec):
    rng = np.random.default_rng(1)
    for m in (1, 5, 5, 1, 300, 2):
        X = random_input(rng, 3, m, "float32")
        assert_matches_oracle(spec, X, unfeed(runtime.predict(feed(X, "rows")), "rows"), "float32")
    X = random_input(rng, 3, 6, "float32")
    assert_matches_oracle(spec, X, runtime.predict(X.T).T, "float32")  # X.T is a non-contiguous view


def test_results_are_not_overwritten_by_the_next_call(runtime):
    first = runtime.predict(np.zeros((2, 3), np.float32))
    kept = first.copy()
    runtime.predict(np.full((2, 3), 5.0, np.float32))
    np.testing.assert_array_equal(first, kept)


def test_threads_calling_one_runtime_get_their_own_answers(runtime, spec):
    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(200):
            X = random_input(rng, 3, int(rng.integers(1, 9)), "float32")
            assert_matches_oracle(spec, X, unfeed(runtime.predict(feed(X, "rows")), "rows"), "float32")

    errors = in_threads(worker, [(s,) for s in range(4)])
    assert not errors, errors[0]


@pytest.mark.parametrize("opset", sorted({13, 17, newest_opset()}))
def test_onnxruntime_runs_the_opsets_we_write(spec, opset):
    runtime = Runtime(model_bytes(spec, opset=opset), provider="cpu")
    assert runtime.predict(np.ones((2, 3), np.float32)).shape == (2, 1)


def test_auto_says_which_provider_it_took(spec, caplog):
    with caplog.at_level(logging.INFO, logger="forwardpass.runtime"):
        runtime = Runtime(model_bytes(spec), provider="auto")
    assert runtime.provider in ("cpu", "cuda")
    assert f"runs on {runtime.provider}" in caplog.text


@pytest.mark.skipif(cuda_offered(), reason="this onnxruntime offers CUDA")
def test_cuda_where_there_is_none_says_how_to_get_it(spec):
    with pytest.raises(ProviderError, match=r"onnxruntime-gpu \(1.31 is built for CUDA 13 and cuDNN 9\)") as info:
        Runtime(model_bytes(spec), provider="cuda")
    assert info.value.kind is Kind.UNAVAILABLE


def test_unknown_provider(spec):
    with pytest.raises(Exception, match="unknown provider 'tpu'"):
        Runtime(model_bytes(spec), provider="tpu")


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFormatError, match="no such file") as info:
        Runtime(tmp_path / "none.onnx")
    assert info.value.kind is Kind.NOT_FOUND


def test_garbage_model_bytes_are_a_clear_error():
    with pytest.raises(ModelFormatError, match="onnxruntime cannot load it"):
        Runtime(b"not a model", provider="cpu")


def test_no_onnxruntime_names_both_extras():
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from forwardpass.runtime import Runtime\n"
        "from forwardpass.errors import ProviderError\n"
        "try:\n    Runtime(b'')\nexcept ProviderError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "forwardpass[cpu]" in out and "forwardpass[gpu]" in out and "cannot share" in out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden", [False, True])
def test_large_rows_batches_run_columns_inside_and_match_the_oracle(dtype, hidden):
    acts = (Activation("relu"), Activation("leaky_relu", 0.2), Activation("tanh"), Activation("softmax"))
    spec = random_spec(np.random.default_rng(2), (3, 5, 4, 6, 3), acts)
    runtime = Runtime(model_bytes(spec, dtype=dtype, expose_hidden=hidden), provider="cpu", threads=1)
    assert runtime.columns_inside
    X = random_input(np.random.default_rng(3), 3, LARGE_BATCH + 7, dtype)
    outputs = runtime.run(feed(X, "rows"))
    assert_matches_oracle(spec, X, unfeed(outputs["y"], "rows"), dtype)
    for name in runtime.output_names[1:]:  # every Z[l] and A[l] as [batch, n_l], like the file's
        assert outputs[name].shape == (LARGE_BATCH + 7, spec.sizes[int(name[1:])])
        assert_matches_oracle(spec, X, unfeed(outputs[name], "rows"), dtype, layer=name)


def test_columns_inside_can_be_switched_off_and_is_never_made_for_columns_or_foreign_names(spec):
    assert not Runtime(model_bytes(spec), provider="cpu", columns_inside=False).columns_inside
    assert not Runtime(model_bytes(spec, layout="columns"), provider="cpu").columns_inside
    foreign = onnx.load_from_string(model_bytes(spec))
    foreign.graph.output[0].name = foreign.graph.node[-1].output[0] = "probability"
    runtime = Runtime(foreign.SerializeToString(), provider="cpu")
    assert not runtime.columns_inside  # readback takes it, but its names are not ours
    assert runtime.predict(np.ones((LARGE_BATCH, 3), np.float32)).shape == (LARGE_BATCH, 1)


def test_a_columns_inside_session_that_disagrees_with_the_oracle_is_never_used(spec, monkeypatch, caplog):
    import dataclasses

    import forwardpass.runtime as runtime_module

    build = runtime_module.build_columns_inside

    def off_by_a_bias(back_spec, options, tensor=None):  # a derivation gone wrong: every bias moved by one
        moved = tuple(b + 1.0 for b in back_spec.biases)
        return build(dataclasses.replace(back_spec, biases=moved), options, tensor)

    monkeypatch.setattr(runtime_module, "build_columns_inside", off_by_a_bias)
    with caplog.at_level(logging.WARNING, logger="forwardpass.runtime"):
        runtime = Runtime(model_bytes(spec), provider="cpu")
    assert not runtime.columns_inside
    assert "disagrees" in caplog.text
    X = random_input(np.random.default_rng(4), 3, LARGE_BATCH, "float32")
    assert_matches_oracle(spec, X, unfeed(runtime.predict(feed(X, "rows")), "rows"), "float32")
