"""Capacity per core: what one forwardpass worker pinned to one core serves at each batch size, over gRPC
and HTTP/REST, and the cores and replicas a load needs (docs/deploy.md, "Capacity").

The load generator shares this machine, so the server (one worker, as a 1-CPU pod runs it) is pinned to
core 0 with taskset and the load runs on the other cores. What carries over to a cluster is the server's
CPU time per request (from /proc, the server's processes only): 1000 / (ms per request) requests per
core-second. Each cell runs at 1 call in flight (the latency of a lightly loaded server) and at 8 (a busy
core: the CPU per request it gets down to, and the latency that goes with it; the table shows how much of
its core the server really got, which other work on the machine can cut). gRPC: the closed-loop client of
bench/closed_loop.py, in this process; HTTP: h2load --h1 (bench/serve_http.py), JSON for one row,
Triton's binary extension for more.

    python bench/capacity.py [--quick] [--update-docs]

writes bench/results/capacity.json and capacity.md, and with --update-docs the table and the worked
example into docs/deploy.md between <!-- capacity --> markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import closed_loop
import peers
import serve_http
from markers import replace_section
from procfs import cpu_seconds, process_tree
from report import machine, percentile, progress
from servers import ROOT, forwardpass_command, request_array, request_bytes, serve

ROWS = (1, 64, 1024, 65536)
IN_FLIGHT = (1, 8)
SERVER_CORE = 0
UTILIZATION = 0.7  # the HPA's target: headroom for a surge while a new pod loads
POD_CORES = 2  # deploy/kubernetes/deployment.yaml: 2 CPUs, so 2 workers
MIN_PODS = 2  # the HPA's minReplicas: one pod may drain or move while the other serves
# The worked example of docs/deploy.md: (what, protocol, rows per request, requests per second)
LOADS = (
    ("20,000 req/s of batch 1 over gRPC", "gRPC", 1, 20_000),
    ("20,000 req/s of batch 1 over HTTP (JSON)", "HTTP", 1, 20_000),
    ("50 M rows/s in requests of 65,536 rows over gRPC", "gRPC", 65536, 50e6 / 65536),
    ("50 M rows/s in requests of 65,536 rows over HTTP (binary)", "HTTP", 65536, 50e6 / 65536),
)
RESULTS = ROOT / "bench" / "results"


def grpc_cell(port: int, process, rows: int, concurrency: int, warmup: float, seconds: float) -> dict:
    """The closed loop on one channel for warmup + seconds; the server's CPU over the measured window."""
    tree = process_tree(process.pid)
    readings: list[float] = []

    def sample() -> None:
        time.sleep(warmup)
        readings.append(cpu_seconds(tree))
        time.sleep(seconds)
        readings.append(cpu_seconds(tree))

    sampler = threading.Thread(target=sample)
    sampler.start()
    url = f"127.0.0.1:{port}"
    result = asyncio.run(closed_loop.run(url, request_bytes(rows), concurrency, 1, warmup, seconds, retries=False))
    sampler.join()
    latencies = sorted(result["latencies_ms"])
    answers, server_cpu = result["answers"], readings[1] - readings[0]
    return {
        "req_per_s": answers / seconds,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "errors": result["errors"],
        "server_cores": server_cpu / seconds,
        "server_cpu_ms_per_req": server_cpu / answers * 1000 if answers else None,
    }


def http_cell(port: int, process, rows: int, concurrency: int, warmup: float, seconds: float, work: Path) -> dict:
    """h2load --h1: JSON for one row (what curl sends), Triton's binary extension for more."""
    x = request_array(rows)
    request = serve_http.json_request(x) if rows == 1 else serve_http.binary_request(x)
    request.path = work / f"request-{rows}.bin"
    request.path.write_bytes(request.body)
    return serve_http.cell(port, process, request, concurrency, warmup, seconds, work / f"h2load-{rows}.log")


def measure(quick: bool, run: int) -> list[dict]:
    """Every (protocol, rows, in flight) cell on one pinned worker."""
    warmup, seconds = (0.3, 1.0) if quick else (1.0, 3.0)
    others = sorted(os.sched_getaffinity(0) - {SERVER_CORE}) or [SERVER_CORE]
    os.sched_setaffinity(0, others)  # this process and h2load: off the server's core
    protocols = ("gRPC", "HTTP") if shutil.which("h2load") else ("gRPC",)
    cells, total = [], len(protocols) * len(ROWS) * len(IN_FLIGHT)
    with tempfile.TemporaryDirectory(prefix="forwardpass-capacity-") as folder:
        work = Path(folder)
        command = ["taskset", "-c", str(SERVER_CORE), *forwardpass_command(1, ROOT / "models", peers.free_port())]
        port, process = serve(command)
        http_port = int(command[command.index("--http-port") + 1])
        try:
            for protocol in protocols:
                for rows in ROWS:
                    for concurrency in IN_FLIGHT:
                        progress(
                            len(cells) + 1, total, f"run {run + 1}: {protocol}, {rows:,} rows, {concurrency} in flight"
                        )
                        if protocol == "gRPC":
                            cell = grpc_cell(port, process, rows, concurrency, warmup, seconds)
                        else:
                            cell = http_cell(http_port, process, rows, concurrency, warmup, seconds, work)
                        cells.append(
                            {"protocol": protocol, "rows": rows, "concurrency": concurrency, "run": run, **cell}
                        )
        finally:
            peers.stop(process)
    return cells


def medians(raw: list[dict]) -> list[dict]:
    """One cell per (protocol, rows, in flight): the median of the runs for every figure."""
    keys = dict.fromkeys((c["protocol"], c["rows"], c["concurrency"]) for c in raw)
    figures = ("req_per_s", "p50_ms", "p99_ms", "server_cores", "server_cpu_ms_per_req")
    cells = []
    for protocol, rows, concurrency in keys:
        runs = [c for c in raw if (c["protocol"], c["rows"], c["concurrency"]) == (protocol, rows, concurrency)]
        values = {f: statistics.median(c[f] for c in runs) if all(c[f] for c in runs) else None for f in figures}
        errors = sum(sum(c["errors"].values()) for c in runs)
        cells.append({"protocol": protocol, "rows": rows, "concurrency": concurrency, "runs": len(runs),
                      "errors": errors, **values})  # fmt: skip
    return cells


def saturated(cells: list[dict], protocol: str, rows: int) -> dict:
    return next(c for c in cells if (c["protocol"], c["rows"], c["concurrency"]) == (protocol, rows, IN_FLIGHT[-1]))


def light(cells: list[dict], protocol: str, rows: int) -> dict:
    return next(c for c in cells if (c["protocol"], c["rows"], c["concurrency"]) == (protocol, rows, IN_FLIGHT[0]))


def plan(cells: list[dict]) -> list[dict]:
    """Cores and pods for each load of LOADS: load x CPU per request / UTILIZATION, in pods of POD_CORES."""
    plans = []
    for what, protocol, rows, req_per_s in LOADS:
        if not any(c["protocol"] == protocol for c in cells):
            continue
        full, idle = saturated(cells, protocol, rows), light(cells, protocol, rows)
        if not full["server_cpu_ms_per_req"]:
            raise SystemExit(f"no answers in the {protocol} cell of {rows:,} rows: is the machine too busy?")
        busy_cores = req_per_s * full["server_cpu_ms_per_req"] / 1000
        cores = busy_cores / UTILIZATION
        plans.append({
            "load": what, "protocol": protocol, "rows": rows, "req_per_s": req_per_s,
            "cpu_ms_per_req": full["server_cpu_ms_per_req"], "busy_cores": busy_cores, "cores": cores,
            "pods": max(MIN_PODS, math.ceil(cores / POD_CORES)), "p50_light_ms": idle["p50_ms"],
            "p99_light_ms": idle["p99_ms"], "p50_full_ms": full["p50_ms"], "p99_full_ms": full["p99_ms"],
        })  # fmt: skip
    return plans


def markdown(report: dict) -> str:
    """The per-core table and the worked example, as docs/deploy.md shows them."""
    m = report["machine"]
    lines = [
        "| protocol | rows per request | server CPU ms per request | requests per core-second | rows per "
        "core-second | p50 / p99 ms, 1 in flight | p50 / p99 ms, 8 in flight | server's cores used, 8 in flight |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for protocol in dict.fromkeys(c["protocol"] for c in report["cells"]):
        for rows in ROWS:
            full, idle = saturated(report["cells"], protocol, rows), light(report["cells"], protocol, rows)
            per_core = 1000 / full["server_cpu_ms_per_req"]
            lines.append(
                f"| {protocol} | {rows:,} | {full['server_cpu_ms_per_req']:.3f} | {per_core:,.0f} | "
                f"{_si(per_core * rows)} | {idle['p50_ms']:.2f} / {idle['p99_ms']:.2f} | "
                f"{full['p50_ms']:.2f} / {full['p99_ms']:.2f} | {full['server_cores']:.2f} |"
            )
    lines += [
        "",
        f"{m['cpu']}, one worker pinned to one core, the load on the other; medians of {report['runs']} runs; "
        f"{m['date']}; "
        f"onnxruntime {m['onnxruntime']}, grpcio {m['grpcio']}. `python bench/capacity.py` "
        "(its raw cells: bench/results/capacity.json, kept locally).",
        "",
        f"| load | CPU ms per request | busy cores | cores at {UTILIZATION:.0%} | pods of {POD_CORES} CPUs "
        f"(at least {MIN_PODS}) | "
        "p50 / p99 ms, 1 in flight | p50 / p99 ms, 8 in flight |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report["plan"]:
        lines.append(
            f"| {p['load']} | {p['cpu_ms_per_req']:.3f} | {p['busy_cores']:.1f} | {p['cores']:.1f} | {p['pods']} | "
            f"{p['p50_light_ms']:.2f} / {p['p99_light_ms']:.2f} | {p['p50_full_ms']:.2f} / {p['p99_full_ms']:.2f} |"
        )
    lines.append("")
    for p in report["plan"]:  # the arithmetic, spelled out
        lines.append(
            f"- {p['load']}: {p['req_per_s']:,.0f} req/s x {p['cpu_ms_per_req']:.3f} ms = {p['busy_cores']:.1f} busy "
            f"cores; / {UTILIZATION} = {p['cores']:.1f} cores; {p['pods']} pods of {POD_CORES} CPUs "
            f"({p['pods'] * POD_CORES} workers)."
        )
    return "\n".join(lines) + "\n"


def _si(value: float) -> str:
    return f"{value / 1e6:.1f} M" if value >= 1e6 else f"{value:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.3 s warm-up and 1 s per cell (a smoke run)")
    parser.add_argument("--runs", type=int, default=3, help="runs of every cell; the tables show medians")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for capacity.json and capacity.md")
    parser.add_argument("--update-docs", action="store_true", help="put the tables into docs/deploy.md")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 cores: one for the server, one for the load")
    raw = [cell for run in range(args.runs) for cell in measure(args.quick, run)]
    cells = medians(raw)
    report = {"machine": machine(), "quick": args.quick, "runs": args.runs, "cells": cells, "plan": plan(cells),
              "raw": raw}  # fmt: skip
    stem = "capacity-quick" if args.quick else "capacity"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (args.out / f"{stem}.md").write_text(f"# Capacity per core\n\n{table}")
    print(table)
    if args.update_docs and not args.quick:
        replace_section("capacity", table)
    errors = sum(c["errors"] for c in cells)
    if errors:
        print(f"{errors} calls failed", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
