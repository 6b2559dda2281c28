"""Triton's perf_analyzer against forwardpass: the client's and the server's breakdown of one request.

perf_analyzer is the tool Triton users measure with. It reads ServerMetadata, ModelMetadata and
ModelConfig, drives ModelInfer in a closed loop, and (with the statistics extension) reads
ModelStatistics around every window, so it reports the server's own queue / compute input /
compute infer / compute output per request beside the client's latency. The perf-analyzer wheels
from 2.60 on need glibc 2.38; tritonclient 2.41.0 bundles a binary that runs on older systems with
Debian's libb64-0d and libcudart.so.12 from the nvidia-cuda-runtime-cu12 wheel (no GPU needed). Both
wheels go in a virtualenv of their own (bench/peers, "perf_analyzer"), since the test extra needs a
newer tritonclient.

With several workers, the statistics it reads are the server's whichever worker answers (they are
summed over workers, server/stats.py): the same requests the client counted.
"""

from __future__ import annotations

import csv
import io
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import peers

from forwardpass.server.dataplane import DataPlane
from forwardpass.server.inference import InferInput, InferRequest
from forwardpass.server.repository import Repository

MODEL = "mlp_3_4_1"
# perf_analyzer's CSV columns (--verbose-csv), in microseconds but for the first two.
COLUMNS = {
    "Inferences/Second": "infer_per_s",
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_and_server_us",
    "Server Queue": "queue_us",
    "Server Compute Input": "compute_input_us",
    "Server Compute Infer": "compute_infer_us",
    "Server Compute Output": "compute_output_us",
    "Client Recv": "client_recv_us",
    "p50 latency": "p50_us",
    "p99 latency": "p99_us",
    "Avg latency": "avg_us",
}


def locate() -> tuple[list[str], dict[str, str]] | str:
    """perf_analyzer's command and environment, building its virtualenv on first use; or why it cannot run."""
    python = peers.ensure_venv("perf_analyzer", peers.default_root())
    venv = python.parent.parent
    binary = venv / "bin" / "perf_analyzer"
    cudart = sorted(venv.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"))
    env = {"LD_LIBRARY_PATH": ":".join(str(p) for p in cudart)}
    probe = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=env, timeout=60)
    missing = [line for line in (probe.stdout + probe.stderr).splitlines() if "error while loading" in line]
    if missing or not binary.exists():
        return f"perf_analyzer does not start ({missing[0] if missing else 'no binary'}); apt-get install libb64-0d"
    return [str(binary)], env


def measure(found: tuple[list[str], dict[str, str]], port: int, concurrency: int, seconds: float, work: Path) -> dict:
    """One perf_analyzer measurement of batch-1 requests at `concurrency` in flight over gRPC."""
    command, env = found
    out = work / f"perf-analyzer-{port}-{concurrency}.csv"
    args = [
        *command,
        "-m",
        MODEL,
        "-u",
        f"127.0.0.1:{port}",
        "-i",
        "grpc",
        "--concurrency-range",
        str(concurrency),
        "--measurement-interval",
        str(int(seconds * 1000)),
        # A shared two-core machine moves more than perf_analyzer's default 10% between windows.
        "--stability-percentage",
        "50",
        "--max-trials",
        "6",
        "-f",
        str(out),
        "--verbose-csv",
    ]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=30 * seconds + 120)
    rows = list(csv.DictReader(io.StringIO(out.read_text()))) if out.exists() else []
    if not rows:
        tail = (result.stdout + result.stderr).strip().splitlines()[-1:]
        return {"concurrency": concurrency, "error": tail[0] if tail else f"exit {result.returncode}"}
    row = rows[0]
    return {"concurrency": concurrency, **{key: float(row[column]) for column, key in COLUMNS.items()}}


def in_process_compute_infer_us(repository: Path, calls: int = 3000, repeats: int = 5, pause_s: float = 0.0) -> float:
    """The same call in this process: the data plane's own compute infer per batch-1 request (the
    figure perf_analyzer reads from ModelStatistics), median over repeats, with no gRPC around it.
    With `pause_s`, the process sleeps that long before each call, as a server does between the
    requests of one client: the call then starts with cold caches, as it does when served."""
    models = Repository(repository, provider="cpu", threads=1)
    models.load()
    plane = DataPlane(models)
    plane.loaded = True
    x = np.random.default_rng(1).standard_normal((1, 3)).astype(np.float32)
    request = InferRequest(MODEL, inputs=(InferInput("x", "FP32", (1, 3), x.tobytes()),))
    stats = models.get(MODEL).stats
    per_repeat = []
    for _ in range(repeats + 1):  # the first warms up
        before = stats.snapshot().compute_infer
        for _ in range(calls):
            if pause_s:
                time.sleep(pause_s)
            plane.infer(request)
        after = stats.snapshot().compute_infer
        per_repeat.append((after.ns - before.ns) / (after.count - before.count) / 1000)
        time.sleep(0.05)
    return statistics.median(per_repeat[1:])
