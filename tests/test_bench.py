"""The benchmarks run, in their quick modes, so they cannot rot; their numbers are not asserted."""

import http.client
import json
import re
import shutil
import signal
import subprocess
import sys

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from forwardpass.protos import grpc_service_pb2 as pb

from harness import ROOT, ServerProcess, free_port, need_tool

MODEL = ROOT / "models" / "mlp_3_4_1" / "1" / "model.onnx"
INFER = "/inference.GRPCInferenceService/ModelInfer"


def test_local_bench_quick(tmp_path):
    result = subprocess.run([sys.executable, "bench/local.py", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "local-quick.json").read_text())
    assert {c["n"] for c in report["throughput"]["rows"]} == {1, 256, 4096, 65536}
    assert "Against the targets" in (tmp_path / "local-quick.md").read_text()


def test_serve_bench_quick(tmp_path):
    need_tool("h2load", "nghttp2-client")  # its HTTP cells
    result = subprocess.run([sys.executable, "bench/serve.py", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "serve-quick.json").read_text())
    cells = {(c["target"].split(",")[0], c["cell"], c["concurrency"]) for c in report["cells"]}
    assert ("forwardpass", "batch 1", 64) in cells and ("bare gRPC", "65,536 rows", 1) in cells
    # The bare inference servers answered onnxruntime's y to each request before they were measured
    # (the bench stops otherwise), and are measured in every cell the cost-per-request ratios take.
    for key, name in (("cells", "bare inference gRPC, 1 process"), ("http_cells", "bare inference HTTP, 1 process")):
        measured = {(c["cell"], c["concurrency"]) for c in report[key] if c["target"] == name}
        assert len(measured) == 4, (name, measured)  # every cell of its door, those of the ratios among them
    assert all(sum(c["errors"].values()) == 0 for c in report["cells"] + report["http_cells"])
    # The servers each ratio compares are measured in turn: no other cell of theirs between their two.
    sys.path.insert(0, str(ROOT / "bench"))
    from serve_report import IN_TURN

    for raw in (report["raw"], report["http_raw"]):
        in_turn = sorted((r for r in raw if r["target"] in IN_TURN), key=lambda r: r["at"])
        cells = [(r["cell"], r["concurrency"]) for r in in_turn]
        assert len(cells) == 8 and all(cells[i] == cells[i + 1] for i in range(0, 8, 2)), cells
    # The ratio cells again, in alternating windows (bench/paired.py): each on both servers, every window answered.
    import paired

    alternated: dict[tuple, set[str]] = {}
    for r in report["paired"]:
        alternated.setdefault((r["door"], r["cell"], r["concurrency"]), set()).add(r["target"])
        windows = (paired.HTTP_WINDOWS if r["door"] == "HTTP" else paired.GRPC_WINDOWS)[True][0]
        assert r["windows"] == windows and r["req_per_s"] > 0 and not r["errors"], r
    assert len(alternated) == 6 and all(len(names) == 2 for names in alternated.values()), alternated
    assert report["profile"]["infer_us"] > 0
    markdown = (tmp_path / "serve-quick.md").read_text()
    assert "## Against the targets" in markdown and "## One request, end to end" in markdown
    ratios = markdown.split("## Against the bare inference servers")[1]
    assert ratios.count("| >= 0.9x: ") == 6  # one row per cell the targets name, both doors


def test_profile_gives_each_sample_to_its_innermost_stage():
    """A sample goes to the stage of its innermost named frame, a waiting thread's to none; each thread's CPU
    is shared out by its samples, and what no stage names (or py-spy cannot see) is the loop's."""
    sys.path.insert(0, str(ROOT / "bench"))
    from request_profile import LOOP, split, stage_of

    http = "thread (1): http;Server.run (uvicorn/server.py:86);RestApp.__call__ (server/rest.py:168)"
    decode = f"{http};RestApp._infer (server/rest.py:471);_numbers (server/restcodec.py:172)"
    compute = f"{http};DataPlane.infer (server/dataplane.py:248);Statistics.record_execution (server/stats.py:160)"
    compute += ";Runtime._call (forwardpass/runtime.py:187)"
    assert stage_of(decode.split(";")) == "decode"
    assert stage_of(compute.split(";")) == "compute"  # inside stats' record_execution, still onnxruntime's
    assert stage_of(f"{http};RestApp._find_route (server/rest.py:310)".split(";")) == "route"
    assert stage_of("thread (2): rpc_0;Thread.run (threading.py:982)".split(";")) is None
    assert stage_of("thread (1): http;Runner.run (asyncio/runners.py:118)".split(";")) == LOOP
    waiting = "thread (2): rpc_0;_worker (concurrent/futures/thread.py:81)"
    loop = "thread (1): http;Runner.run (asyncio/runners.py:118)"
    stacks = f"{decode} 10\n{compute} 20\n{loop} 10\n{waiting} 900"
    # Thread 1 spent 80 ms over 1,000 requests, shared 1:2:1; thread 2 (waiting) none; thread 3 (C++) 20 ms.
    us = split(stacks, requests=1000, thread_cpu={1: 0.08, 2: 0.0, 3: 0.02})
    assert (us["decode"], us["compute"], us[LOOP], us["total"]) == (20.0, 40.0, 40.0, 100.0)


def test_profile_of_one_run(tmp_path):
    """bench/request_profile.py against real servers: every door's stages for the three, forwardpass with its token."""
    need_tool("h2load", "nghttp2-client")
    command = [sys.executable, "bench/request_profile.py", "--quick", "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "profile.json").read_text())
    # Each door's cells for the three: forwardpass, its worker around the bare handlers, the bare server.
    assert len(report["rows"]) == 12 and all(r["errors"] == 0 for r in report["rows"])
    assert {r["server"] for r in report["rows"]} == {"forwardpass, 1 worker", "forwardpass's worker, bare handlers",
                                                     "bare inference server"}  # fmt: skip
    for row in report["rows"]:
        assert row["us"]["total"][0] > row["us"]["compute"][0] >= 0, row
        # 65,536 rows compute for about 0.2 ms a request: always seen; a 1-row call's few µs may not be, in 1 s.
        assert row["us"]["compute"][0] > 0 or "65,536" not in row["cell"], row
    # forwardpass ran as deployed, door by door: a call without the token refused, and every answer counted
    # (a sampled stage of a few µs, such as the token check's, may get no sample in the quick mode's second).
    assert [g["door"] for g in report["guarded"]] == ["HTTP", "gRPC"]
    assert all(g["refused_without_token"] and g["counted"] > 0 for g in report["guarded"]), report["guarded"]
    assert (tmp_path / "profile.md").read_text().count("| total |") == 4


def test_handler_costs_of_one_quick_run(tmp_path):
    """bench/handler_costs.py on the committed model: every stage timed for both servers' handlers, and the
    answers they timed were 200s (the bench stops on any other)."""
    command = [sys.executable, "bench/handler_costs.py", "--quick", "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "handler-costs.json").read_text())
    for door in ("http", "grpc"):
        ours, bare = report[door]["forwardpass"], report[door]["bare inference server"]
        assert all(us > 0 for us in [*ours.values(), *bare.values()]), report[door]
        # Both compute through the same kind of session; the whole of a handler holds its parts.
        assert ours["whole call"] > ours["compute"] and bare["whole call"] > bare["compute"]
        assert ours["data plane, all of it"] > ours["compute"]
    large = "whole call, 65,536 rows"
    assert report["grpc"]["forwardpass"][large] > report["grpc"]["forwardpass"]["whole call"]
    # Over HTTP with the binary extension, its 786 KB body handed over in 64 KiB chunks, as uvicorn does.
    http_large = "whole call, 65,536 rows binary in 13 chunks"
    for server in ("forwardpass", "bare inference server"):
        assert report["http"][server][http_large] > report["http"][server]["whole call"]
        # Each large call timed again with its onnxruntime run (about two thirds of it) answered from a memo.
        for door, name in (("http", http_large), ("grpc", large)):
            assert 0 < report[door][server][f"{name}, compute left out"] < 0.8 * report[door][server][name]
    text = (tmp_path / "handler-costs.md").read_text()
    assert text.count("| whole call |") == 2 and f"| {large} |" in text and f"| {http_large} |" in text
    assert text.count("With 65,536 rows and compute left out,") == 2


@pytest.fixture(scope="module")
def bare_inference():
    """bench/bare_inference.py's servers on the committed 3-4-1 model: {door: port}."""
    processes, ports = [], {}
    try:
        for door in ("grpc", "http"):
            ports[door] = free_port()
            command = [sys.executable, "bench/bare_inference.py", door, "--model", str(MODEL), "--port"]
            process = subprocess.Popen([*command, str(ports[door])], cwd=ROOT, stdout=subprocess.PIPE, text=True)
            processes.append(process)
            assert "serving on" in process.stdout.readline()  # or it exited: the line is empty
        yield ports
    finally:
        for process in processes:
            process.terminate()
            # uvicorn, once it has shut down, raises the SIGTERM it caught again: the HTTP server ends by it.
            assert process.wait(30) in (0, -signal.SIGTERM)


def _post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/v2/models/mlp_3_4_1/infer", body=body, headers=headers)
        answer = connection.getresponse()
        kept = ("content-type", "inference-header-content-length")
        return answer.status, {k.lower(): v for k, v in answer.getheaders() if k.lower() in kept}, answer.read()
    finally:
        connection.close()


def _http_requests(x: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    """The serve bench's HTTP bodies for x: JSON, and Triton's binary extension with outputs as JSON or binary."""
    requests = {}
    document = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    requests["JSON"] = json.dumps(document).encode(), {"content-type": "application/json"}
    for outputs in ("JSON", "binary"):
        size = {"binary_data_size": x.nbytes}
        document = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "parameters": size}]}
        if outputs == "binary":
            document["parameters"] = {"binary_data_output": True}
        header = json.dumps(document).encode()
        headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}
        requests[f"binary in, {outputs} out"] = header + x.tobytes(), headers
    return requests


@pytest.fixture(scope="module")
def forwardpass_3_4_1(tmp_path_factory):
    """`forwardpass serve` with 1 worker on the committed 3-4-1 model, as the serve bench compares it."""
    repository = tmp_path_factory.mktemp("served")
    shutil.copytree(ROOT / "models" / "mlp_3_4_1", repository / "mlp_3_4_1")
    server = ServerProcess(repository, "--max-message-mb", "16")
    yield server
    assert server.stop() == 0, server.output()


@pytest.mark.parametrize("rows", [1, 65536])  # 65,536: the columns-inside session (4,096 rows and more)
def test_bare_inference_servers_answer_as_forwardpass(forwardpass_3_4_1, bare_inference, rows):
    """The anchors of the cost-per-request ratios answer each request of the serve bench with the bytes
    forwardpass answers (the same session and call, so the same y bit for bit) and onnxruntime's y."""
    server = forwardpass_3_4_1
    x = np.random.default_rng(rows).standard_normal((rows, 3)).astype(np.float32)
    want = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    request = pb.ModelInferRequest(model_name="mlp_3_4_1")
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    answers = []
    for url in (server.url, f"127.0.0.1:{bare_inference['grpc']}"):
        with grpc.insecure_channel(url, [("grpc.max_receive_message_length", 16 * 2**20)]) as channel:
            answers.append(channel.unary_unary(INFER)(request.SerializeToString(), timeout=60))
    ours, bare = (pb.ModelInferResponse.FromString(answer) for answer in answers)
    assert bare == ours
    y = np.frombuffer(bare.raw_output_contents[0], np.float32).reshape(tuple(bare.outputs[0].shape))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    http_port = int(server.http_url.rsplit(":", 1)[1])
    ready = http.client.HTTPConnection("127.0.0.1", bare_inference["http"], timeout=10)
    ready.request("GET", "/v2/models/mlp_3_4_1/ready")  # what the serve bench waits for
    assert ready.getresponse().status == 200
    ready.close()
    for kind, (body, headers) in _http_requests(x).items():
        ours, bare = _post(http_port, body, headers), _post(bare_inference["http"], body, headers)
        assert ours[0] == 200 and bare == ours, kind


def test_cost_per_request_ratios_are_taken_within_each_run():
    """forwardpass is set against the bare inference server measured in the same run, run by run, so a
    run where the shared machine was slower for both counts as what it is: the median of those ratios,
    not the ratio of the medians (0.95 here)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from serve_report import BARE_INFERENCE, RATIO_OURS, bare_inference_ratios

    raw = [
        {"target": target, "run": run, "cell": "batch 1", "concurrency": 1, "req_per_s": rate, "p99_ms": 1.0,
         "server_cpu_ms_per_req": None}
        for run, rates in enumerate(((1800, 2000), (500, 1000), (950, 1000)))
        for target, rate in zip((RATIO_OURS, BARE_INFERENCE["gRPC"]), rates)
    ]  # fmt: skip
    (found,) = bare_inference_ratios({"raw": raw, "http_raw": []})
    assert (found["door"], found["runs"], found["ratio"], found["ratio_min"], found["ratio_max"]) == (
        "gRPC", 3, 0.9, 0.5, 0.95,
    )  # fmt: skip


def test_every_headline_a_bench_writes_has_one_home_in_the_docs():
    """`--update-docs` puts each bench's headline between its markers in the one doc that holds them."""
    written = {
        name
        for script in (ROOT / "bench").glob("*.py")
        for name in re.findall(r'replace_section\("([\w-]+)"', script.read_text())
    }
    assert written == {"local-headline", "serve-headline", "soak", "capacity"}
    docs = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for name in written:
        homes = [
            doc.name for doc in docs if f"<!-- {name} -->" in doc.read_text() and f"<!-- /{name} -->" in doc.read_text()
        ]
        assert len(homes) == 1, (name, homes)


def test_raw_results_stay_local():
    """The benches write their raw logs to bench/results/*.json; only the summaries are committed."""
    need_tool("git", "git")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "bench/results"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip(f"git cannot list this checkout: {tracked.stderr.strip()}")
    names = tracked.stdout.split()
    assert names and all(name.endswith(".md") for name in names), names
