"""Statistics of the server, not of a worker: every worker answers ModelStatistics (gRPC and HTTP)
and /metrics with the same totals, from one table the workers share; versions that come and go
reuse its slots; Triton's perf_analyzer, which reads statistics around every window, agrees."""

import json
import multiprocessing
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
import pytest

from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc
from forwardpass.server.stats import BATCH_SIZES, DURATIONS, Duration, Statistics, StatisticsTable

from harness import ROOT, ServerProcess, answering_worker, free_port, missing_tool, scrape

MODEL = "mlp_3_4_1"
ROWS = 3  # rows per request, so that rows and requests are told apart
ASKED = 16  # statistics asked on this many fresh connections: both workers answer (a miss is 2**-15)


def fresh(url: str) -> grpc.Channel:
    """A channel on a connection of its own, so that the kernel may hand it to either worker."""
    return grpc.insecure_channel(url, options=[("grpc.use_local_subchannel_pool", 1)])


def infer_grpc(url: str, model: str = MODEL) -> None:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[ROWS, 3])
    request.raw_input_contents.append(np.ones((ROWS, 3), np.float32).tobytes())
    with fresh(url) as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)


def infer_http(http_url: str, model: str = MODEL) -> None:
    document = {"inputs": [{"name": "x", "shape": [ROWS, 3], "datatype": "FP32", "data": [1.0] * ROWS * 3}]}
    request = urllib.request.Request(f"{http_url}/v2/models/{model}/infer", json.dumps(document).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as answer:  # a connection per call
        assert answer.status == 200


def grpc_statistics(url: str, model: str = MODEL) -> tuple[str, dict]:
    """Which worker answered, and its ModelStatistics of the model's one version, as HTTP writes them."""
    with fresh(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        (stats,) = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model), timeout=10).model_stats
        worker = answering_worker(stub)

    def duration(d: pb.StatisticDuration) -> dict:
        return {"count": d.count, "ns": d.ns}

    computes = ("compute_input", "compute_infer", "compute_output")
    return worker, {
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "last_inference": stats.last_inference,
        "inference_stats": {name: duration(getattr(stats.inference_stats, name)) for name in DURATIONS},
        "batch_stats": [
            {"batch_size": b.batch_size, **{name: duration(getattr(b, name)) for name in computes}}
            for b in stats.batch_stats
        ],
    }


def http_statistics(http_url: str, model: str = MODEL) -> dict:
    """The HTTP door's statistics of the model's one version, the fields grpc_statistics has."""
    with urllib.request.urlopen(f"{http_url}/v2/models/{model}/stats", timeout=10) as answer:  # a connection per call
        (stats,) = json.loads(answer.read())["model_stats"]
    keys = ("inference_count", "execution_count", "last_inference", "inference_stats", "batch_stats")
    return {key: stats[key] for key in keys}


def test_every_worker_answers_with_the_servers_counts(two_workers):
    server, port = two_workers
    calls = 40
    for i in range(calls):  # half through each door, each call on a connection of its own
        if i % 2:
            infer_grpc(server.url)
        else:
            infer_http(server.http_url)
    answers = [grpc_statistics(server.url) for _ in range(ASKED)]
    assert len({worker for worker, _ in answers}) == 2  # both workers answered
    every = [stats for _, stats in answers] + [http_statistics(server.http_url) for _ in range(ASKED)]
    for stats in every:
        assert stats["inference_count"] == calls * ROWS and stats["execution_count"] == calls
        durations = stats["inference_stats"]
        for name in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            assert durations[name]["count"] == calls, (name, stats)
        assert durations["fail"]["count"] == 0
        assert [(b["batch_size"], b["compute_infer"]["count"]) for b in stats["batch_stats"]] == [(ROWS, calls)]
    assert len({json.dumps(stats, sort_keys=True) for stats in every}) == 1  # the same answer from both doors
    assert 0 < every[0]["last_inference"] <= time.time() * 1000  # the latest inference, milliseconds
    metrics = scrape(port)  # the same counters, not a second count
    assert metrics[f"nv_inference_request_success/{MODEL}"] == calls
    assert metrics[f"nv_inference_count/{MODEL}"] == calls * ROWS
    assert metrics[f"nv_inference_compute_infer_duration_us/{MODEL}"] == durations["compute_infer"]["ns"] // 1000


def ready_everywhere(server, model: str, want: bool) -> bool:
    """Whether ModelReady answers `want` on both workers within 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = set()
        for _ in range(12):
            with fresh(server.url) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                seen.add((answering_worker(stub), stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=10).ready))
        if len({pid for pid, _ in seen}) == 2 and all(ready == want for _, ready in seen):
            return True
        time.sleep(0.1)
    return False


def test_a_version_loaded_again_starts_from_zero_and_the_others_keep_counting(tmp_path):
    shutil.copytree(ROOT / "models", tmp_path / "models")
    port = free_port()
    server = ServerProcess(tmp_path / "models", "--workers", "2", "--metrics-port", str(port),
                           "--model-control-mode", "explicit", "--load-model", "*")  # fmt: skip
    other = "mlp_3_4_1_sigmoid"
    try:
        for _ in range(6):
            infer_grpc(server.url)
            infer_http(server.http_url, other)
        with fresh(server.url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=MODEL), timeout=30)
            assert ready_everywhere(server, MODEL, False)
            deadline = time.monotonic() + 10  # and every worker has given its slot back
            while f"nv_inference_count/{MODEL}" in scrape(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert f"nv_inference_count/{MODEL}" not in scrape(port)  # gone from /metrics with the version
            with urllib.request.urlopen(f"{server.http_url}/v2/models/{MODEL}/stats", timeout=10) as answer:
                assert json.loads(answer.read())["model_stats"] == []  # no version served, none counted
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=MODEL), timeout=30)
            assert ready_everywhere(server, MODEL, True)
        answers = [grpc_statistics(server.url)[1] for _ in range(ASKED)] + [http_statistics(server.http_url)]
        assert {stats["inference_stats"]["success"]["count"] for stats in answers} == {0}  # as Triton: a new load
        for _ in range(5):
            infer_http(server.http_url)
        assert {grpc_statistics(server.url)[1]["execution_count"] for _ in range(ASKED)} == {5}
        assert {http_statistics(server.http_url, other)["execution_count"] for _ in range(ASKED)} == {6}
        assert scrape(port)[f"nv_inference_request_success/{other}"] == 6
    finally:
        assert server.stop() == 0


KEY = ("m", "1")


def test_each_answer_failure_and_run_lands_in_its_own_field():
    # Distinct values in every field: record_success writes the row's head in one call, by position.
    table, stats = StatisticsTable(slots=1, workers=1), Statistics()
    table.serve(0, {KEY: stats})
    stats.record_failure(7)
    stats.record_success(3, 10, 20, 30, ran_alone=True)
    stats.record_success(2, 1, 2, 4)  # computed in a dynamic batch: its run is counted apart
    stats.record_execution(2, queued_ns=(5, 6), input_ns=100, infer_ns=200, output_ns=300)
    stats.record_failure(8)
    got = stats.snapshot()
    assert (got.inference_count, got.execution_count) == (5, 2)
    assert got.last_inference_ms >= time.time_ns() // 1_000_000 - 60_000
    assert got.durations() == {
        "success": Duration(2, 67),
        "fail": Duration(2, 15),
        "queue": Duration(3, 11),
        "compute_input": Duration(2, 11),
        "compute_infer": Duration(2, 22),
        "compute_output": Duration(2, 34),
    }
    assert [(b.batch_size, b.compute_input, b.compute_infer, b.compute_output) for b in got.batch_stats] == [
        (2, Duration(1, 100), Duration(1, 200), Duration(1, 300)),
        (3, Duration(1, 0), Duration(1, 20), Duration(1, 0)),
    ]


def test_versions_that_come_and_go_reuse_the_slots_and_start_from_zero():
    table = StatisticsTable(slots=2, workers=1)
    for version in range(1, 11):  # ten versions through two slots, each replacing the one before
        stats = Statistics()
        table.serve(0, {("m", str(version)): stats})
        stats.record_success(version, 0, 0, 0)
        assert stats.snapshot().inference_count == version  # nothing of an earlier version
        assert [(model, v) for model, v, _ in table.versions()] == [("m", str(version))]


def test_a_version_beyond_the_slots_serves_with_counts_of_its_own(caplog):
    table = StatisticsTable(slots=1, workers=1)
    first, second = Statistics(), Statistics()
    second.record_success(2, 0, 0, 0)
    table.serve(0, {("m", "1"): first, ("m", "2"): second})
    assert "statistics of m version 2 are this worker's own" in caplog.text
    second.record_success(2, 0, 0, 0)
    assert second.snapshot().inference_count == 4 and [v for _, v, _ in table.versions()] == ["1"]
    table.serve(0, {("m", "2"): second})  # version 1 went: version 2 takes the slot, with its counts
    assert second.snapshot().inference_count == 4 and [v for _, v, _ in table.versions()] == ["2"]


def _sibling(table: StatisticsTable) -> None:
    """A second worker process serving KEY, that counts 3 rows and then dies without giving it back."""
    theirs = Statistics()
    table.serve(1, {KEY: theirs})
    theirs.record_success(3, 0, 0, 0)


def test_a_version_a_sibling_serves_keeps_its_counts_across_processes():
    table = StatisticsTable(slots=4, workers=2)
    mine = Statistics()
    mine.record_success(2, 0, 0, 0)  # counted before the worker attached it: carried over
    table.serve(0, {KEY: mine})
    sibling = multiprocessing.get_context("fork").Process(target=_sibling, args=(table,))
    sibling.start()
    sibling.join(30)
    assert sibling.exitcode == 0
    assert mine.snapshot().inference_count == 5  # its row and the sibling's, summed
    table.serve(0, {})  # this worker drops it; the sibling's row still holds it (a restart takes it up)
    again = Statistics()
    table.serve(0, {KEY: again})
    assert again.snapshot().inference_count == 5


def test_batch_stats_keep_the_first_sizes_apart_and_the_rest_in_one_entry():
    stats = Statistics()
    sizes = list(range(1, BATCH_SIZES + 6))
    for rows in sizes + [1, 1]:
        stats.record_execution(rows, infer_ns=rows)
    totals = stats.snapshot()
    assert [b.batch_size for b in totals.batch_stats] == [*range(1, BATCH_SIZES + 1), 0]  # 0: every other size
    assert totals.batch_stats[0].compute_infer == Duration(3, 3)
    assert totals.batch_stats[-1].compute_infer == Duration(5, sum(sizes[BATCH_SIZES:]))
    assert sum(b.compute_infer.count for b in totals.batch_stats) == totals.execution_count == len(sizes) + 2


def test_counting_imports_no_metrics_endpoint():
    """The data plane counts through server/stats.py alone; the /metrics endpoint (http.server) reads it."""
    code = (
        "import sys, forwardpass.server.dataplane\n"
        "print(sorted({'http.server', 'forwardpass.server.metrics'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


# perf_analyzer: windows of 250 ms (a few thousand requests a run), so that 10 runs per door take
# seconds. Any 3 windows will do: the test is of the counts, not of a steady rate on a shared machine.
PERF_RUNS = 10
PERF_ARGS = "--concurrency-range 2 --measurement-interval 250 --stability-percentage 1000 --max-trials 3".split()


def perf_analyzer_command() -> tuple[list[str], dict[str, str]]:
    sys.path.insert(0, str(ROOT / "bench"))
    import perf_analyzer

    try:
        found = perf_analyzer.locate()
    except subprocess.CalledProcessError as exc:  # its virtualenv could not be built (no index reachable)
        missing_tool(f"perf_analyzer's virtualenv could not be built: {exc}")
    if isinstance(found, str):
        missing_tool(found)
    return found


def counts(output: str) -> tuple[int, int]:
    """The requests perf_analyzer counted in its windows, and those the server's statistics counted."""
    client = re.search(r"Client:\s+Request count: (\d+)", output)
    server = re.search(r"Server:\s+Inference count: (\d+)", output)
    assert client and server, output
    return int(client[1]), int(server[1])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_reads_the_servers_statistics_from_either_worker(two_workers, protocol):
    command, env = perf_analyzer_command()
    server, _ = two_workers
    url = server.http_url.removeprefix("http://") if protocol == "http" else server.url
    results = []
    for _ in range(PERF_RUNS):  # no -x: perf_analyzer finds the version whose statistics grew
        run = subprocess.run([*command, "-m", MODEL, "-u", url, "-i", protocol, *PERF_ARGS],
                             capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        results.append(counts(run.stdout))
    for client, served in results:
        # The client counts the requests that ended within its windows, the server those between its
        # statistics reads, which come a few milliseconds after each window's edges: the two differ
        # by the requests of those milliseconds (at most 1.1 % where measured). One worker's counts
        # alone would miss about half, or count another window's.
        assert abs(client - served) <= client * 0.1, results
