"""Serving speed: forwardpass beside the gRPC and HTTP ceilings and the servers users would run instead.

    python bench/serve.py             # 3 runs (make bench): about 20 minutes, make bench in all about 24
    python bench/serve.py --quick     # forwardpass (1 worker) and the bare servers only, a second per cell (CI)
    python bench/serve.py --no-peers  # without MLServer, KServe and PyTriton
    python bench/serve.py --history   # also what the speed work replaced, switched back (about 3 minutes more)

gRPC: servers, each started here on loopback and driven by the same load generator (bench/loadgen.py:
a closed loop over several connections, the same pre-encoded request for all):
  * bare: a gRPC server on the same stack with the same message sizes that does no inference;
  * bare inference (bench/bare_inference.py): one grpc.aio process making forwardpass's onnxruntime
    call (its Runtime, so the columns-inside session too) and nothing else, the anchor of the
    cost-per-request ratios;
  * forwardpass with 1 and N workers, dynamic batching off and on, as deployed: every call carries the
    token (every client here sends it, to every server alike) and metrics are served; the same worker
    without token and metrics, for what they cost;
    forwardpass traced at rate 1 (--trace-otlp to a sink in this process that takes every export; with
    forwardpass[trace] installed), for what tracing costs beside the untraced worker;
    with --history, beside them what the speed work changed, switched back: its handler on grpc.aio
    alone, 8 handler threads (the old default), and 65,536-row requests through the file's own Gemms
    (--no-columns-inside), also with glibc's malloc thresholds (FORWARDPASS_MALLOC=glibc);
  * MLServer 1.7 through a small onnxruntime runtime, defaults and parallel_workers=0, and Triton
    (PyTriton 0.7.0: a Python model behind Triton's front end, not Triton's onnxruntime backend),
    each in a virtualenv of its own (built on first use, about a minute each, under
    ~/.cache/forwardpass-peers).
Cells: batch-1 requests at concurrency 1, 16 and 64, and 65,536-row requests at concurrency 1:
requests/s, rows/s, p50 and p99, CPU of server and client, and each server's resident memory.
h2load (nghttp2-client), where installed, drives the same bytes from C to show where the Python
client, not the server, was the limit.
Triton's perf_analyzer (bench/perf_analyzer.py, tritonclient 2.41.0 in a virtualenv of its own) drives
forwardpass with N workers at 1 and 16 in flight, with 2 handler threads (and with 8: --history), and reports its
client and server breakdown per request, beside the same call timed in this process.

HTTP/REST, in the same run (bench/serve_http.py): the bare HTTP server (forwardpass's stack, uvicorn
with httptools and uvloop and a raw ASGI app, one process, answering fixed bytes of the same size: the
ceiling), the bare inference HTTP server (the same stack and process count, forwardpass's onnxruntime
call on V2 JSON and binary requests, nothing else), forwardpass over HTTP with 1 and N workers,
MLServer's REST (both settings; JSON only: it has no binary extension), KServe's Python model server
0.21 (kserve.ModelServer, a small kserve.Model running onnxruntime) and Triton's HTTP as PyTriton
bundles it. Cells: JSON batch 1 at 1, 16 and 64 in flight, and 65,536 rows at 1 in flight with Triton's
binary tensor extension (JSON for MLServer). The load generator is h2load --h1, a C client, so that the
client is not the limit; its per-request log gives every answer's status (non-2xx counts as an error)
and the latencies. The servers that speak both protocols serve both tables from one start.
The cost-per-request ratios: forwardpass with 1 worker over the bare inference server of the same door,
run by run, in the cells the targets name (HTTP JSON batch 1 at 1 and 16 in flight, HTTP binary 65,536
rows at 1; gRPC batch 1 at 1 and 16, gRPC 65,536 rows at 1), with both sides' p99 and server CPU per
request. Those servers (and forwardpass without token and metrics, measured there only) are up together;
after their cells, each ratio cell's load goes to them in alternating windows (bench/paired.py: 12 of
a quarter of a second each over gRPC, 6 of half a second over HTTP, the order reversed every round), so
that both sides of a ratio sample the same seconds of this shared machine. Results:
bench/results/serve.{json,md}.
Duration: 3 runs x 11 servers x 4 gRPC cells and 9 servers x 4 HTTP cells of 3 s (1 s warm-up, 2 s
measured; the ratio cells take their 3 s a server in the windows) is about 12 minutes; the windows add
about 70 s a run, and the profile, batching, h2load and perf_analyzer cells and the servers' starts and
stops bring it to about 20. On a day this 2-core machine ran slow, with 3 s measured per cell, it took
24.2 minutes, and make bench's other benches 8.8 more: the cells were cut to 2 s for make bench to stay
under 30 minutes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import paired  # noqa: E402
import peers  # noqa: E402  (bench/peers: the peer servers and their virtualenvs)
import perf_analyzer  # noqa: E402
import serve_http  # noqa: E402
from closed_loop import AUTHORIZATION, METHOD  # noqa: E402
from procfs import cpu_seconds, machine_busy, machine_cores, process_tree, rss_mb  # noqa: E402
from report import machine, percentile, progress  # noqa: E402
from serve_report import BARE_INFERENCE, BEFORE, IN_TURN, RATIO_CELLS, RATIO_OURS, UNGUARDED  # noqa: E402
from servers import (  # noqa: E402
    OtlpSink,
    forwardpass_command,
    request_array,
    request_bytes,
    response_bytes,
    serve,
    start,
    wait_answering,
)

from forwardpass.protos import grpc_service_pb2 as pb  # noqa: E402
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc  # noqa: E402

MODEL = ROOT / "models" / "mlp_3_4_1" / "1" / "model.onnx"
# A cell's (warm-up, measured) seconds; --quick's first.
CELL_SECONDS = {False: (1.0, 2.0), True: (0.3, 1.0)}
CELLS = (("batch 1", 1, 1), ("batch 1", 16, 1), ("batch 1", 64, 1), ("65,536 rows", 1, 65536))


@dataclass
class Target:
    """One server to measure: how to start it."""

    name: str
    command: list[str] | None = None  # a plain process; or a peer started through bench/peers
    peer: str | None = None
    options: dict = field(default_factory=dict)
    cells: tuple = CELLS  # over gRPC
    http: bool = False  # also measured over HTTP/REST (serve_http.CELLS), on the same server
    binary: bool = True  # 65,536 rows over HTTP with Triton's binary extension; else JSON
    ceiling: bool = False  # answers fixed bytes, computing nothing (bench/stacks.py bare, bare-http)
    paired_only: bool = False  # measured only in the ratio cells' alternating windows (bench/paired.py)


class Bench:
    """Runs every target over every cell, repeats, and keeps the raw results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="forwardpass-bench-"))
        self.requests = {rows: self.work / f"request-{rows}.bin" for rows in (1, 65536)}
        for rows, path in self.requests.items():
            path.write_bytes(request_bytes(rows))
            (self.work / f"response-{rows}.bin").write_bytes(response_bytes(rows))
        self.results: list[dict] = []
        self.http_results: list[dict] = []
        self.paired_results: list[dict] = []  # the ratio cells, measured in alternating windows
        self.logs: dict[int, tuple[str, Path]] = {}  # each started server's name and output, by pid
        self.workers = args.workers
        self._http_setup()

    def _http_setup(self) -> None:
        """The HTTP requests as files for h2load, onnxruntime's answers to them, and the bare server's answers."""
        x = {rows: request_array(rows) for rows in (1, serve_http.LARGE)}
        session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
        self.http_y = {rows: session.run(["y"], {"x": array})[0] for rows, array in x.items()}
        self.http_requests = {
            ("JSON", 1): serve_http.json_request(x[1]),
            ("JSON", serve_http.LARGE): serve_http.json_request(x[serve_http.LARGE]),
            ("binary", serve_http.LARGE): serve_http.binary_request(x[serve_http.LARGE]),
        }
        for (encoding, rows), request in self.http_requests.items():
            request.path = self.work / f"http-{encoding}-{rows}.bin"
            request.path.write_bytes(request.body)
        (self.work / "http-answer.json").write_bytes(serve_http.json_answer(self.http_y[1]))
        binary, self.http_json_length = serve_http.binary_answer(self.http_y[serve_http.LARGE])
        (self.work / "http-answer.bin").write_bytes(binary)

    def _bare_http_command(self) -> list[str]:
        """The bare HTTP server (bench/stacks.py bare-http) with forwardpass's answers; start() adds the port."""
        return [
            sys.executable,
            "bench/stacks.py",
            "bare-http",
            "--response",
            str(self.work / "http-answer.json"),
            "--binary-response",
            str(self.work / "http-answer.bin"),
            "--binary-json-length",
            str(self.http_json_length),
        ]

    def targets(self) -> list[Target]:
        plain, batched = self._repositories()
        n = self.workers
        guard = self.work / "token"

        def ours_command(workers: int, repository: Path = plain) -> list[str]:
            """forwardpass as deployed: the token checked on every call, metrics served (and, as always,
            statistics counted and the robustness limits on)."""
            return forwardpass_command(workers, repository, token_file=guard)

        bare_http = Target("bare HTTP, 1 process", self._bare_http_command(), cells=(), http=True, ceiling=True)
        # The anchors of the cost-per-request ratios: forwardpass's onnxruntime call alone behind each door.
        anchors = [
            Target(BARE_INFERENCE["gRPC"], bare_inference_command("grpc")),
            Target(BARE_INFERENCE["HTTP"], bare_inference_command("http"), cells=(), http=True),
        ]
        ours = Target(RATIO_OURS, ours_command(1), http=True)
        ours_n = Target(f"forwardpass, {n} workers", ours_command(n), http=True)
        targets = [
            Target("bare gRPC, 1 process", bare_command(1), ceiling=True),
            Target(f"bare gRPC, {n} processes", bare_command(n), ceiling=True),
            bare_http,
            *anchors,
            ours,
            ours_n,
            Target("forwardpass, 1 worker, batching", ours_command(1, batched)),
            Target(f"forwardpass, {n} workers, batching", ours_command(n, batched)),
            # What the token and metrics cost: the same worker without them, in the ratio cells only.
            Target(UNGUARDED, forwardpass_command(1, plain), http=True, paired_only=True),
        ]
        if self.args.quick:
            return [targets[0], bare_http, *anchors, ours]
        after_ours = targets.index(ours) + 1
        if self.args.history:  # beside the defaults, in the same run: what the speed work changed, switched back
            targets[after_ours:after_ours] = [
                Target("forwardpass handler on grpc.aio, 1 process",
                       [sys.executable, "bench/stacks.py", "aio", "--model-repository", str(plain)]),
                Target("forwardpass, 1 worker, 8 handler threads", [*ours_command(1), "--threads", "8"],
                       cells=CELLS[:3]),
                Target("forwardpass, 1 worker, --no-columns-inside", [*ours_command(1), "--no-columns-inside"],
                       cells=CELLS[3:]),
                Target(BEFORE, ["env", "FORWARDPASS_MALLOC=glibc", *ours_command(1), "--no-columns-inside"],
                       cells=CELLS[3:]),
            ]  # fmt: skip
        if importlib.util.find_spec("opentelemetry.sdk") is not None:  # forwardpass[trace]
            self.sink = OtlpSink()
            traced = [*ours_command(1), "--trace-otlp", self.sink.url]
            targets.insert(after_ours, Target("forwardpass, 1 worker, traced (rate 1)", traced, http=True))
        else:
            print("the traced cell is left out: it needs pip install 'forwardpass[trace]'", file=sys.stderr)
        if not self.args.no_peers:
            mlserver = {"peer": "mlserver", "http": True, "binary": False}  # MLServer has no binary extension
            targets += [
                Target("MLServer 1.7.1, defaults", options={"parallel_workers": 1}, **mlserver),
                Target("MLServer 1.7.1, parallel_workers=0", options={"parallel_workers": 0}, **mlserver),
                Target("KServe 0.21.0", peer="kserve", cells=(), http=True),
                Target("PyTriton 0.7.0", peer="pytriton", http=True),
            ]
        return targets

    def _repositories(self) -> tuple[Path, Path]:
        plain, batched = self.work / "plain", self.work / "batched"
        for repo in (plain, batched):
            shutil.copytree(ROOT / "models" / "mlp_3_4_1", repo / "mlp_3_4_1")
        config = batched / "mlp_3_4_1" / "config.pbtxt"
        config.write_text(config.read_text() + "dynamic_batching { }\n")
        return plain, batched

    def start(self, target: Target) -> tuple[int | None, int | None, subprocess.Popen]:
        """Start a target: its gRPC port (None without gRPC cells), HTTP port (None unless measured), process."""
        http_port = peers.free_port() if target.http else None
        if target.command and not target.cells:  # HTTP only: its one port is HTTP
            port, process = self._logged(target, target.command)
            return None, port, process
        if target.command:
            command = list(target.command)
            if target.ceiling:
                command += ["--response", str(self.work / "response-1.bin")]
            if http_port:
                command[command.index("--http-port") + 1] = str(http_port)
            port, process = self._logged(target, command)
            return port, http_port, process
        port = peers.free_port()
        python = peers.ensure_venv(target.peer, peers.default_root())
        work = self.work / f"{target.peer}-{port}"
        if target.peer == "mlserver":
            process = peers.start_mlserver(python, MODEL, port, work, http_port=http_port, **target.options)
        elif target.peer == "kserve":
            return None, http_port, peers.start_kserve(python, MODEL, http_port, work)
        else:
            process = peers.start_pytriton(python, MODEL, port, work, max_batch_size=65536, http_port=http_port)
        return port, http_port, process

    def run(self) -> None:
        """Every target over its cells, run after run. The servers the cost-per-request ratios compare
        (IN_TURN) are up together and measured in turn, cell by cell, in reverse order every other run:
        each ratio compares seconds of this machine next to each other, not moments minutes apart."""
        targets = self.targets()
        together = [target for target in targets if target.name in IN_TURN]
        groups = [[target] for target in targets if target not in together]
        if together:
            groups.insert(targets.index(together[0]), together)
        steps = self.args.runs * len(groups)
        step = 0
        for run in range(self.args.runs):
            for group in groups:
                step += 1
                progress(step, steps, f"run {run + 1}: {', '.join(target.name for target in group)}")
                self._measure(group if run % 2 == 0 else group[::-1], run)

    def _logged(self, target: Target, command: list[str]) -> tuple[int, subprocess.Popen]:
        """start(), the server's output to a file of the bench's work folder (servers.start discards it)."""
        log = self.work / f"server-{len(self.logs)}.log"
        with log.open("wb") as output:
            port, process = start(command, output=output)
        self.logs[process.pid] = (target.name, log)
        return port, process

    def _say_logs(self, started: list) -> None:
        """The last lines each started server wrote, for a bench that stops on one of them."""
        for *_, process in started:
            name, log = self.logs.get(process.pid, (None, None))
            if log is not None:
                tail = log.read_text(errors="replace").splitlines()[-20:]
                print(f"--- {name} (pid {process.pid}), the end of its output:", *tail, sep="\n", file=sys.stderr)

    def _measure(self, targets: list[Target], run: int) -> None:
        """Start the targets, measure each cell on each of them in turn, stop them."""
        started: list[tuple[Target, int | None, int | None, subprocess.Popen]] = []
        memory: dict[str, list[float]] = {}  # each server's resident memory once it answers
        try:
            for target in targets:
                port, http_port, process = self.start(target)
                started.append((target, port, http_port, process))
                if target.cells:
                    wait_answering(port, process, timeout=300)
                    self._check_answer(target, port)
                if target.http:
                    peers.wait_http_ready(http_port, process, timeout=300, headers=dict([AUTHORIZATION]))
                    self._check_http(target, http_port)
                memory[target.name] = rss_mb(process_tree(process.pid))
            for label, concurrency, rows in CELLS:
                for target, port, _, process in started:
                    if target.paired_only or (label, concurrency, rows) not in target.cells:
                        continue
                    if target.ceiling and rows != 1:
                        continue  # a ceiling's 65,536 rows: measured below with the matching canned response
                    at = time.time()  # when the cell began: the report shows the ratios' cells measured in turn
                    cell = {"at": at, **self._cell(port, process, concurrency, rows)}
                    self._record(target, run, label, memory[target.name], cell)
            for label, concurrency, rows in serve_http.CELLS:
                for target, _, http_port, process in started:
                    if target.http and not target.paired_only:
                        at = time.time()
                        cell = {"at": at, **self._http_cell(target, http_port, process, concurrency, rows)}
                        where = {"target": target.name, "run": run, "cell": label, "rss_mb": memory[target.name]}
                        self.http_results.append({**where, **cell})
            if any(target.name in IN_TURN for target, *_ in started):
                self._paired(started, run)
        except Exception:
            self._say_logs(started)
            raise
        finally:
            for *_, process in started:
                peers.stop(process)
        for target in targets:
            if target.ceiling and target.cells:
                self._bare_large(target, run)

    def _paired(self, started: list, run: int) -> None:
        """The cells the cost-per-request ratios name, on the ratio servers of their door in alternating
        windows (bench/paired.py): forwardpass as deployed, the bare inference server, forwardpass without
        token and metrics."""
        for door, cell, concurrency, _ in RATIO_CELLS:
            http = door == "HTTP"
            names = (RATIO_OURS, BARE_INFERENCE[door], UNGUARDED)
            servers = [
                paired.Server(target.name, http_port if http else port, process.pid)
                for target, port, http_port, process in started
                if target.name in names and (http_port if http else port)
            ]
            if len(servers) < 2:
                continue
            rows = serve_http.LARGE if "65,536" in cell else 1
            if http:
                request = self.http_requests[("binary" if rows > 1 else "JSON", rows)]
                found = paired.http_cell(servers, request, concurrency, self.args.quick, self.work)
            else:
                found = paired.grpc_cell(servers, self.requests[rows], concurrency, self.args.quick, self.work)
            for name, result in found.items():
                where = {"target": name, "run": run, "door": door, "cell": cell, "concurrency": concurrency}
                self.paired_results.append({**where, "rows": rows, **result})

    def _http_request(self, target: Target, rows: int) -> serve_http.Request:
        encoding = "binary" if rows > 1 and target.binary else "JSON"
        return self.http_requests[(encoding, rows)]

    def _check_http(self, target: Target, port: int) -> None:
        """Each HTTP request once: 200 and onnxruntime's y (the bare server's fixed answers: 200 only)."""
        for rows in (1, serve_http.LARGE):
            request = self._http_request(target, rows)
            if target.ceiling:
                status, _, body = serve_http.post(port, request)
                if status != 200:
                    raise RuntimeError(f"{target.name} answers HTTP {status}: {body[:300]!r}")
            else:
                serve_http.check(port, request, self.http_y[rows], target.name)

    def _http_cell(self, target: Target, port: int, process: subprocess.Popen, concurrency: int, rows: int) -> dict:
        warmup, seconds = CELL_SECONDS[self.args.quick]
        log = self.work / f"h2load-{port}-{concurrency}-{rows}.log"
        request = self._http_request(target, rows)
        cell = serve_http.cell(port, process, request, concurrency, warmup, seconds, log)
        return {**cell, "rows": rows, "rows_per_s": cell["req_per_s"] * rows}

    def _bare_large(self, target: Target, run: int) -> None:
        """The ceiling for 65,536-row requests: the bare server answering with a 65,536-row response."""
        port, process = serve([*target.command, "--response", str(self.work / "response-65536.bin")])
        try:
            cell = self._cell(port, process, 1, 65536)
            self._record(target, run, "65,536 rows", rss_mb(process_tree(process.pid)), cell)
        finally:
            peers.stop(process)

    def _record(self, target: Target, run: int, label: str, memory: list[float], cell: dict) -> None:
        self.results.append({"target": target.name, "run": run, "cell": label, "rss_mb": memory, **cell})

    def _check_answer(self, target: Target, port: int) -> None:
        """Each gRPC request once: onnxruntime's y, or the bench stops (the bare server's fixed answers: none)."""
        if target.ceiling:
            return
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            for rows in (1, 65536) if ("65,536 rows", 1, 65536) in target.cells else (1,):
                call = channel.unary_unary(METHOD)
                raw = call(self.requests[rows].read_bytes(), timeout=60, metadata=(AUTHORIZATION,))
                response = pb.ModelInferResponse.FromString(raw)
                y, want = np.frombuffer(response.raw_output_contents[0], np.float32), self.http_y[rows].ravel()
                if y.shape != want.shape or not np.allclose(y, want, rtol=1e-5, atol=1e-6):
                    raise RuntimeError(f"{target.name} answers y {y.ravel()[:4]}, onnxruntime {want.ravel()[:4]}")

    def _cell(self, port: int, process: subprocess.Popen, concurrency: int, rows: int) -> dict:
        clients = 1 if concurrency == 1 else 2
        per_client = max(1, concurrency // clients)
        outs = [self.work / f"load-{port}-{concurrency}-{rows}-{i}.json" for i in range(clients)]
        warmup, seconds = CELL_SECONDS[self.args.quick]
        command = [
            sys.executable,
            str(ROOT / "bench" / "loadgen.py"),
            "--url",
            f"127.0.0.1:{port}",
            "--request",
            str(self.requests[rows]),
            "--concurrency",
            str(per_client),
            "--channels",
            str(max(1, per_client // 4)),
            "--warmup",
            str(warmup),
            "--seconds",
            str(seconds),
        ]
        loads = [subprocess.Popen([*command, "--out", str(out)]) for out in outs]
        time.sleep(warmup)
        tree = process_tree(process.pid)
        server_before, busy_before = cpu_seconds(tree), machine_busy()
        time.sleep(seconds)
        server_cpu = cpu_seconds(tree) - server_before
        busy_after = machine_busy()
        for load in loads:
            load.wait(timeout=120)
        results = [json.loads(out.read_text()) for out in outs]
        latencies = sorted(v for r in results for v in r["latencies_ms"])
        answers = sum(r["answers"] for r in results)
        return {
            "concurrency": concurrency,
            "rows": rows,
            "req_per_s": answers / seconds,
            "rows_per_s": answers * rows / seconds,
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "errors": error_counts(results),
            "server_cores": server_cpu / seconds,
            "client_cores": sum(r["cpu_s"] for r in results) / (seconds + warmup),
            "machine_cores": machine_cores(busy_before, busy_after),
            "server_cpu_ms_per_req": server_cpu / answers * 1000 if answers else None,
        }


def bare_inference_command(door: str) -> list[str]:
    """The bare inference server of one door (bench/bare_inference.py) on the committed model; start() adds the port."""
    return [sys.executable, "bench/bare_inference.py", door, "--model", str(MODEL)]


def bare_command(workers: int) -> list[str]:
    """The bare server (bench/stacks.py) in `workers` processes; its canned response is added when started."""
    return [sys.executable, "bench/stacks.py", "bare", "--workers", str(workers)]


def h2load(port: int, rows: int, connections: int, streams: int, seconds: float, work: Path) -> dict | None:
    """The same request from nghttp2's h2load (C, no Python client in the way); None if not installed."""
    if shutil.which("h2load") is None:
        return None
    body = request_bytes(rows)
    frame = work / f"h2load-{rows}.bin"
    frame.write_bytes(b"\x00" + len(body).to_bytes(4, "big") + body)  # gRPC's length-prefixed message
    command = [
        "h2load",
        f"http://127.0.0.1:{port}{METHOD}",
        "-d",
        str(frame),
        "-c",
        str(connections),
        "-m",
        str(streams),
        "-D",
        str(max(1, round(seconds))),  # whole seconds only
        "--warm-up-time",
        "1",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
    ]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
    result = {"command": " ".join(command[:1] + command[2:]), "concurrency": connections * streams}
    for line in output.splitlines():
        if line.startswith("finished in"):
            result["req_per_s"] = float(line.split(",")[1].split()[0])
        if line.startswith("requests:"):
            parts = line.replace(",", "").split()
            result["succeeded"], result["failed"] = int(parts[7]), int(parts[9])
        if line.startswith("time for request:"):
            result["mean_ms"] = _ms(line.split()[5])
    return result


def _ms(text: str) -> float:
    for unit, factor in (("us", 1e-3), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def server_statistics(port: int) -> dict:
    """ModelStatistics of the model: the server's totals, whichever worker answers."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        asked = pb.ModelStatisticsRequest(name="mlp_3_4_1")
        stats = stub.ModelStatistics(asked, timeout=10, metadata=(AUTHORIZATION,)).model_stats[0]
    total = {name: getattr(stats, name) for name in ("inference_count", "execution_count")}
    for name in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        duration = getattr(stats.inference_stats, name)
        total[name] = {"count": duration.count, "ns": duration.ns}
    return total


class ServeBench(Bench):
    """Bench, plus the per-request profile, batching counts and h2load."""

    def extras(self) -> dict:
        plain, batched = self.work / "plain", self.work / "batched"
        extras: dict = {"profile": self._profile(forwardpass_command(1, plain))}
        extras["batching"] = {}
        for workers in [1] if self.args.quick else sorted({1, self.workers}):  # quick: what CI checks runs
            extras["batching"][workers] = self._batching(forwardpass_command(workers, batched))
        extras["h2load"] = [] if self.args.quick else self._h2load(plain, batched)
        extras["perf_analyzer"] = self._perf_analyzer(plain)
        return extras

    def _perf_analyzer(self, plain: Path) -> dict:
        """Triton's perf_analyzer on forwardpass with N workers, with the default handler threads and
        with 8, at 1 and 16 in flight; and the same call's compute infer in this process."""
        if self.args.quick:
            return {}
        found = perf_analyzer.locate()
        if isinstance(found, str):
            return {"skipped": found}
        n = self.workers
        commands = {f"forwardpass, {n} workers": forwardpass_command(n, plain)}
        if self.args.history:
            commands[f"forwardpass, {n} workers, 8 handler threads"] = [
                *forwardpass_command(n, plain),
                "--threads",
                "8",
            ]
        rows = []
        for name, command in commands.items():
            port, process = serve(command)
            try:
                for concurrency in (1, 16):
                    rows.append({"target": name, **perf_analyzer.measure(found, port, concurrency, 2.0, self.work)})
            finally:
                peers.stop(process)
        return {
            "rows": rows,
            "in_process_compute_infer_us": perf_analyzer.in_process_compute_infer_us(plain),
            # 0.5 ms apart, about one client's pace at 1 in flight: what serving adds besides contention
            "in_process_paced_compute_infer_us": perf_analyzer.in_process_compute_infer_us(plain, 1000, 3, 0.0005),
        }

    def _counted_cell(self, command: list[str], concurrency: int) -> tuple[dict, dict, dict]:
        """A batch-1 cell on a server of its own, with the server's statistics before and after."""
        port, process = serve(command)
        try:
            before = server_statistics(port)
            cell = self._cell(port, process, concurrency, 1)
            after = server_statistics(port)
        finally:
            peers.stop(process)
        return before, cell, after

    def _profile(self, command: list[str]) -> dict:
        """One request end to end at concurrency 1: decode / infer / encode on the server, the rest gRPC."""
        before, cell, after = self._counted_cell(command, 1)
        count = after["success"]["count"] - before["success"]["count"]

        def avg_us(name: str) -> float:
            return (after[name]["ns"] - before[name]["ns"]) / max(count, 1) / 1000

        split = {
            "decode_us": avg_us("compute_input"),
            "infer_us": avg_us("compute_infer"),
            "encode_us": avg_us("compute_output"),
        }
        split["grpc_and_client_us"] = cell["p50_ms"] * 1000 - sum(split.values())
        split["p50_us"] = cell["p50_ms"] * 1000
        return split

    def _batching(self, command: list[str]) -> dict:
        before, cell, after = self._counted_cell(command, 64)
        requests = after["success"]["count"] - before["success"]["count"]
        runs = after["execution_count"] - before["execution_count"]
        return {
            "requests": requests,
            "onnxruntime_runs": runs,
            "runs_per_request": runs / max(requests, 1),
            "req_per_s": cell["req_per_s"],
        }

    def _h2load(self, plain: Path, batched: Path) -> list[dict]:
        if shutil.which("h2load") is None:
            return []
        n = self.workers
        seconds = 1.0 if self.args.quick else 4.0
        commands = {
            f"bare gRPC, {n} processes": [*bare_command(n), "--response", str(self.work / "response-1.bin")],
            f"forwardpass, {n} workers": forwardpass_command(n, plain),
            f"forwardpass, {n} workers, batching": forwardpass_command(n, batched),
        }
        rows = []
        for name, command in commands.items():
            port, process = serve(command)
            try:
                for connections, streams in ((1, 1), (4, 4), (8, 8)):
                    # h2load counts HTTP/2 answers; the gRPC status rides in trailers it does not read,
                    # so forwardpass's own success counter says how many calls really succeeded.
                    counted = "forwardpass" in name
                    before = server_statistics(port) if counted else None
                    result = h2load(port, 1, connections, streams, seconds, self.work)
                    if counted:
                        after = server_statistics(port)
                        result["grpc_failed"] = after["fail"]["count"] - before["fail"]["count"]
                    rows.append({"target": name, **result})
            finally:
                peers.stop(process)
        return rows


def aggregate(results: list[dict]) -> list[dict]:
    """Median and spread over runs, per target and cell."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["target"], r["cell"], r["concurrency"]), []).append(r)
    rows = []
    for (target, cell, concurrency), runs in groups.items():

        def med(key, runs=runs):
            values = [r[key] for r in runs if r[key] is not None]
            return statistics.median(values) if values else None

        rows.append(
            {
                "target": target,
                "cell": cell,
                "concurrency": concurrency,
                "runs": len(runs),
                "req_per_s": med("req_per_s"),
                "req_per_s_min": min(r["req_per_s"] for r in runs),
                "req_per_s_max": max(r["req_per_s"] for r in runs),
                "rows_per_s": med("rows_per_s"),
                "p50_ms": med("p50_ms"),
                "p99_ms": med("p99_ms"),
                "server_cores": med("server_cores"),
                "client_cores": med("client_cores"),
                "machine_cores": med("machine_cores"),
                "server_cpu_ms_per_req": med("server_cpu_ms_per_req"),
                "rss_mb_total": max(sum(r["rss_mb"]) for r in runs),
                "rss_mb_max_process": max(max(r["rss_mb"]) for r in runs),
                "errors": error_counts(runs),
                **({"encoding": runs[0]["encoding"]} if "encoding" in runs[0] else {}),
            }
        )
    return rows


def error_counts(results: list[dict]) -> dict[str, int]:
    """The failed calls of several results, by status code, added up."""
    return dict(sum((Counter(r["errors"]) for r in results), Counter()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="forwardpass and bare only, 1 s cells, 1 run (CI)")
    parser.add_argument("--no-peers", action="store_true", help="leave out MLServer, KServe and PyTriton")
    parser.add_argument(
        "--history",
        action="store_true",
        help="also what the speed work replaced, switched back: 8 handler threads, --no-columns-inside, "
        "glibc's malloc, the handler on grpc.aio alone (about 3 minutes more)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N, for the N-worker cells")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--update-docs", action="store_true", help="put the headline in docs/speed.md")
    parser.add_argument("--report", type=Path, help="only write the Markdown (and docs) from this JSON")
    args = parser.parse_args()
    if args.report:
        return write_report(json.loads(args.report.read_text()), args.out, args.report.stem, args.update_docs)
    if args.quick:
        args.runs = 1
    bench = ServeBench(args)
    try:
        bench.run()
        extras = bench.extras()
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    report = {
        "machine": machine(),
        "quick": args.quick,
        "runs": args.runs,
        "workers": args.workers,
        "cells": aggregate(bench.results),
        "raw": bench.results,
        "http_cells": aggregate(bench.http_results),
        "http_raw": bench.http_results,
        "paired": bench.paired_results,
        **extras,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    # Without peers, beside the full run's results rather than over them.
    stem = "serve-quick" if args.quick else "serve-no-peers" if args.no_peers else "serve"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    return write_report(report, args.out, stem, args.update_docs)


def write_report(report: dict, out: Path, stem: str, update_docs: bool) -> int:
    from markers import replace_section
    from serve_report import headline, markdown

    (out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    if update_docs:
        replace_section("serve-headline", headline(report))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    raise SystemExit(main())
