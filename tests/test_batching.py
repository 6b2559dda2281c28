"""The dynamic batcher: Triton's semantics, each caller its own rows, real onnxruntime sessions."""

import threading
import time

import numpy as np
import pytest

from forwardpass.builder.spec import Activation
from forwardpass.runtime import Runtime
from forwardpass.server.batching import Batcher
from forwardpass.server.stats import Statistics

from harness import ROOT, in_threads
from numerics import assert_matches_oracle, feed, model_bytes, random_input, random_spec, unfeed

ACTS = (Activation("relu"), Activation("sigmoid"))


@pytest.fixture(scope="module", params=["rows", "columns"])
def setup(request):
    spec = random_spec(np.random.default_rng(0), (3, 4, 2), ACTS)
    layout = request.param
    runtime = Runtime(model_bytes(spec, layout=layout, expose_hidden=True), provider="cpu", threads=1)
    return spec, runtime, layout


def call_concurrently(batcher, spec, layout, sizes, outputs=("y",)):
    barrier = threading.Barrier(len(sizes))

    def caller(i, m):
        X = random_input(np.random.default_rng(i), 3, m, "float32")
        barrier.wait()
        got = batcher.infer(feed(X, layout), m, outputs)
        for name in outputs:
            layer = None if name in ("y", "Y") else name
            assert_matches_oracle(spec, X, unfeed(got[name], layout), "float32", layer=layer)

    errors = in_threads(caller, list(enumerate(sizes)))
    assert not errors, errors[:2]


def test_concurrent_callers_each_get_their_own_rows(setup):
    spec, runtime, layout = setup
    y = "y" if layout == "rows" else "Y"
    stats = Statistics()
    batcher = Batcher(runtime, 0 if layout == "rows" else 1, 64, max_delay_us=2000, stats=stats)
    sizes = [1 + (i * 7) % 13 for i in range(48)]
    call_concurrently(batcher, spec, layout, sizes, outputs=(y, "Z1"))
    snapshot = stats.snapshot()
    assert snapshot.queue.count == 48
    assert snapshot.execution_count < 48  # merged: fewer onnxruntime calls than requests
    assert sum(b.compute_infer.count for b in snapshot.batch_stats) == snapshot.execution_count  # one per run
    if all(b.batch_size for b in snapshot.batch_stats):  # no overflow entry: the sizes add up to the rows
        assert sum(b.batch_size * b.compute_infer.count for b in snapshot.batch_stats) == sum(sizes)


def test_different_outputs_in_one_batch(setup):
    spec, runtime, layout = setup
    batcher = Batcher(runtime, 0 if layout == "rows" else 1, 64, max_delay_us=5000)
    X = random_input(np.random.default_rng(1), 3, 3, "float32")
    results = {}

    def ask(outputs):
        results[outputs] = batcher.infer(feed(X, layout), 3, outputs)

    assert not in_threads(ask, [(("Z1",),), (("A1", "Z2"),)])
    assert set(results[("Z1",)]) == {"Z1"} and set(results[("A1", "Z2")]) == {"A1", "Z2"}
    assert_matches_oracle(spec, X, unfeed(results[("A1", "Z2")]["Z2"], layout), "float32", layer="Z2")


def _lone_request_seconds(runtime, delay_us, preferred=()):
    batcher = Batcher(runtime, 0, 64, preferred, delay_us)
    x = np.ones((1, 3), np.float32)
    batcher.infer(x, 1, ("y",))  # warm up the thread
    start = time.monotonic()
    batcher.infer(x, 1, ("y",))
    return time.monotonic() - start


def test_zero_delay_adds_no_wait_and_a_delay_does():
    runtime = Runtime(model_bytes(random_spec(np.random.default_rng(2), (3, 4, 1), ACTS)), provider="cpu")
    assert _lone_request_seconds(runtime, 300_000) >= 0.3  # the oldest request waits out the delay
    assert _lone_request_seconds(runtime, 0) < 0.15  # with no delay it runs at once


def test_a_preferred_size_sends_the_batch_at_once():
    spec = random_spec(np.random.default_rng(3), (3, 4, 1), ACTS)
    runtime = Runtime(model_bytes(spec), provider="cpu")
    batcher = Batcher(runtime, 0, 64, preferred=[4], max_delay_us=20_000_000)  # 20 s
    start = time.monotonic()
    call_concurrently(batcher, spec, "rows", [1, 1, 2])
    assert time.monotonic() - start < 10  # 4 rows, a preferred size: no 20 s wait


def test_a_request_that_does_not_fit_closes_the_batch_and_is_never_split():
    spec = random_spec(np.random.default_rng(4), (3, 4, 1), ACTS)
    runtime = Runtime(model_bytes(spec), provider="cpu")
    stats = Statistics()
    batcher = Batcher(runtime, 0, 8, max_delay_us=500_000, stats=stats)
    call_concurrently(batcher, spec, "rows", [5, 5])  # 10 rows > 8: two runs of 5, not 8 + 2
    assert stats.snapshot().execution_count == 2


def test_an_error_reaches_every_caller_and_the_batcher_goes_on():
    spec = random_spec(np.random.default_rng(5), (3, 4, 1), ACTS)
    batcher = Batcher(Runtime(model_bytes(spec), provider="cpu"), 0, 64)
    # The data plane checks output names before a request reaches the batcher; onnxruntime's own
    # error stands in here for any failure of a batch's run.
    with pytest.raises(RuntimeError, match="Invalid output name: Z9"):
        batcher.infer(np.ones((2, 3), np.float32), 2, ("Z9",))
    call_concurrently(batcher, spec, "rows", [1, 2, 3])


def test_the_server_batches_and_answers_each_caller(server, repository):
    from forwardpass.builder.readback import read_file
    from forwardpass.client import Client

    spec = read_file(repository / "small" / "1" / "model.onnx").spec  # max_batch_size 8, dynamic_batching { }
    barrier = threading.Barrier(16)

    def caller(i):
        X = random_input(np.random.default_rng(i), 3, 1 + i % 8, "float32")
        with Client(server.url, timeout=30) as client:
            barrier.wait()
            assert_matches_oracle(spec, X, client.infer("small", X.T).T, "float32")

    errors = in_threads(caller, [(i,) for i in range(16)])
    assert not errors, errors[:2]


def test_handler_threads_default_to_more_only_where_a_model_batches(tmp_path, repository):
    from forwardpass.server.app import handler_threads
    from forwardpass.server.options import BATCHING_THREADS, HANDLER_THREADS, ServeOptions

    assert handler_threads(ServeOptions(model_repository=ROOT / "models")) == HANDLER_THREADS
    assert handler_threads(ServeOptions(model_repository=repository)) == BATCHING_THREADS  # "small" batches
    assert handler_threads(ServeOptions(model_repository=repository, threads=3)) == 3
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.pbtxt").write_text("dynamic_batching {")  # loading reports it
    assert handler_threads(ServeOptions(model_repository=tmp_path)) == HANDLER_THREADS
