"""Servers measured in alternation: short windows of the same load, server after server, round after round.

bench/serve.py's cost-per-request ratios compare servers that differ by a tenth or less, on a shared machine
whose speed drifts by more than that within seconds: in cells of 3 s measured one after another, gRPC's
65,536-row ratio spread 0.74-1.20x over three runs. Measured in windows of a quarter to half a second,
each server in turn and the order reversed every round, both sides of a ratio sample the same seconds:
a run's ratio (of the answers summed over its windows) spread 0.87-0.93x and 0.88-0.89x in the next two
serve benches (docs/speed.md, "Against the bare inference servers").

    python bench/paired.py --request req.bin --concurrency 1 --windows 12 --window 0.25 --out out.json \\
        --server "bare inference gRPC, 1 process=PORT:PID" --server "forwardpass, 1 worker=PORT:PID"

That is the gRPC load, a process of its own (its CPU is not the servers'): one closed loop per server
(bench/closed_loop.py's call, with the token), its connections kept open across windows. The HTTP load
(`http_cell`) is h2load --h1 (bench/serve_http.py), started for each window. For each server: answers a
second, p50 and p99 over every window's answers, and its process tree's CPU per answer, read from
/proc's per-thread run times (nanoseconds) around each window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import serve_http
from procfs import cpu_ns, process_tree
from report import percentile

# (windows per server, seconds each): 3 s a server in all, as the ratio cells had in turn before; --quick's.
GRPC_WINDOWS = {False: (12, 0.25), True: (4, 0.25)}
HTTP_WINDOWS = {False: (6, 0.5), True: (2, 0.5)}
HTTP_WARMUP = 0.1  # h2load's warm-up before each window: its connections opened, not counted


@dataclass
class Server:
    """A server under load: its name in the report, port and process."""

    name: str
    port: int
    pid: int


@dataclass
class Tally:
    """One server's windows summed."""

    seconds: float = 0.0
    answers: int = 0  # answered within their window
    answers_after: int = 0  # answered once the window closed, by calls sent within it: their CPU was counted
    cpu_ns: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, seconds: float, answers: int, answers_after: int, cpu: int, latencies, errors: dict) -> None:
        self.seconds += seconds
        self.answers += answers
        self.answers_after += answers_after
        self.cpu_ns += cpu
        self.latencies_ms += latencies
        for key, count in errors.items():
            self.errors[key] = self.errors.get(key, 0) + count

    def result(self, windows: int) -> dict:
        latencies = sorted(self.latencies_ms)
        counted = self.answers + self.answers_after
        return {
            "req_per_s": self.answers / self.seconds if self.seconds else 0.0,
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "server_cpu_ms_per_req": self.cpu_ns / counted / 1e6 if counted else None,
            "errors": self.errors,
            "windows": windows,
            "seconds": self.seconds,
        }


def rounds(servers: list, windows: int) -> list[list]:
    """The servers in turn, the order reversed every other round."""
    return [servers if n % 2 == 0 else servers[::-1] for n in range(windows)]


def grpc_cell(servers: list[Server], request: Path, concurrency: int, quick: bool, work: Path) -> dict[str, dict]:
    """The gRPC load on each server in alternating windows, from a process of its own; by server name."""
    windows, window = GRPC_WINDOWS[quick]
    out = work / f"paired-{servers[0].port}-{concurrency}.json"
    command = [sys.executable, __file__, "--request", str(request), "--concurrency", str(concurrency)]
    command += ["--windows", str(windows), "--window", str(window), "--out", str(out)]
    for server in servers:
        command += ["--server", f"{server.name}={server.port}:{server.pid}"]
    subprocess.run(command, check=True, timeout=60 + 2 * windows * window * len(servers))
    return json.loads(out.read_text())


def http_cell(servers: list[Server], request, concurrency: int, quick: bool, work: Path) -> dict[str, dict]:
    """h2load --h1 on each server in alternating windows (serve_http.load, a fresh h2load each); by server name."""
    windows, window = HTTP_WINDOWS[quick]
    tallies = {server.name: Tally() for server in servers}
    log = work / f"paired-h2load-{servers[0].port}-{concurrency}.log"
    for order in rounds(servers, windows):
        for server in order:
            log.unlink(missing_ok=True)  # h2load appends to its log
            load = serve_http.load(server.port, server.pid, request, concurrency, HTTP_WARMUP, window, log)
            tallies[server.name].add(window, len(load["latencies_ms"]), 0, load["server_cpu_ns"],
                                     load["latencies_ms"], load["errors"])  # fmt: skip
    return {name: tally.result(windows) for name, tally in tallies.items()}


async def drive(servers: list[Server], request: bytes, concurrency: int, windows: int, window: float) -> dict:
    """Closed loops of `concurrency` calls on each server's channel, one server's window at a time."""
    from closed_loop import METHOD, channel, loops

    channels = {s.name: channel(f"127.0.0.1:{s.port}") for s in servers}
    calls = {name: each.unary_unary(METHOD) for name, each in channels.items()}
    trees = {s.name: process_tree(s.pid) for s in servers}
    tallies = {s.name: Tally() for s in servers}

    async def measure(name: str, seconds: float) -> tuple[int, int, int, list[float], dict[str, int]]:
        before, start = cpu_ns(trees[name]), time.perf_counter()
        seen = await loops([calls[name]], request, concurrency, start, start + seconds)
        return len(seen.latencies_ms), seen.late, cpu_ns(trees[name]) - before, seen.latencies_ms, seen.errors

    for server in servers:  # each connection opened and the server warmed before the first window
        await measure(server.name, 0.5)
    for order in rounds(servers, windows):
        for server in order:
            answers, after, cpu, latencies, errors = await measure(server.name, window)
            tallies[server.name].add(window, answers, after, cpu, latencies, errors)
    for each in channels.values():
        await each.close()
    return {name: tally.result(windows) for name, tally in tallies.items()}


def parse_server(text: str) -> Server:
    name, _, where = text.rpartition("=")
    port, _, pid = where.partition(":")
    return Server(name, int(port), int(pid))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--request", type=Path, required=True, help="a serialized ModelInferRequest")
    parser.add_argument("--server", type=parse_server, action="append", required=True, help="NAME=PORT:PID")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--windows", type=int, default=GRPC_WINDOWS[False][0], help="windows per server")
    parser.add_argument("--window", type=float, default=GRPC_WINDOWS[False][1], help="seconds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    found = asyncio.run(drive(args.server, args.request.read_bytes(), args.concurrency, args.windows, args.window))
    args.out.write_text(json.dumps(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
