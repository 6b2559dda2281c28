"""Soak: steady load on `forwardpass serve`, one worker killed midway, nothing else may fail.

    python bench/soak.py                  # 2 minutes at 16 calls in flight (part of the reliability figures)
    python bench/soak.py --quick          # 10 seconds (the test suite runs this)

Clients do not retry. The only failures allowed are UNAVAILABLE, for calls sent to the killed worker
before its clients saw it die, and for up to one reconnect backoff after the kill (FAILURE_WINDOW_S).
Reported: requests, failures by status and when, p99 before and after the kill, and the server's
resident memory at start and end (growth bound: MEMORY_BOUND_MB).
Writes bench/results/soak.{json,md} (soak-quick.* with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import peers  # noqa: E402
from closed_loop import run as load  # noqa: E402
from procfs import process_tree, rss_mb  # noqa: E402
from report import percentile  # noqa: E402
from servers import forwardpass_command, request_bytes, serve  # noqa: E402

MEMORY_BOUND_MB = 30.0  # growth of the whole server over a run: beyond it, something leaks
# A client whose connection died reconnects at once; the kernel may still hand that connection to
# the dying worker's listening socket (SO_REUSEPORT; Linux's net.ipv4.tcp_migrate_req is off by
# default), which resets it. The channel then fails calls at once until its first reconnect backoff
# ends: 1 s with 20% jitter (grpc doc/connection-backoff.md). Failures later than this are a bug.
FAILURE_WINDOW_S = 1.2


async def soak(url: str, server: subprocess.Popen, seconds: float, concurrency: int) -> dict:
    timeline: list = []
    kill_at = seconds / 2
    killed: dict = {}

    async def kill_one_worker() -> None:
        await asyncio.sleep(kill_at)
        workers = sorted(process_tree(server.pid)[1:])
        killed["pid"], killed["at"] = workers[0], kill_at
        os.kill(workers[0], signal.SIGKILL)

    request = request_bytes(1)
    memory_start = sum(rss_mb(process_tree(server.pid)))
    await asyncio.gather(
        load(url, request, concurrency, max(2, concurrency // 4), 0.0, seconds, timeline=timeline, retries=False),
        kill_one_worker(),
    )
    memory_end = sum(rss_mb(process_tree(server.pid)))
    before = [lat for t, lat, code in timeline if code == "OK" and t < kill_at]
    after = [lat for t, lat, code in timeline if code == "OK" and t >= kill_at + 2]  # once replaced
    failures: dict[str, int] = {}
    for _, _, code in timeline:
        if code != "OK":
            failures[code] = failures.get(code, 0) + 1
    failed_at = [round(t, 3) for t, _, code in timeline if code != "OK"]
    return {
        "seconds": seconds,
        "concurrency": concurrency,
        "requests": len(timeline),
        "failures": failures,
        "failed_at_s": failed_at,
        "killed_worker_at_s": killed.get("at"),
        "failure_window_s": FAILURE_WINDOW_S,
        "p99_before_ms": percentile(before, 99),
        "p99_after_ms": percentile(after, 99),
        "memory_start_mb": memory_start,
        "memory_end_mb": memory_end,
        "memory_bound_mb": MEMORY_BOUND_MB,
        "workers_after": len(process_tree(server.pid)) - 1,
    }


def markdown(result: dict) -> str:
    failures = ", ".join(f"{n} {code}" for code, n in result["failures"].items()) or "none"
    lines = [
        f"- {result['requests']:,} requests in {result['seconds']:.0f} s at {result['concurrency']} in flight, "
        f"clients without retries; one worker killed (SIGKILL) at {result['killed_worker_at_s']:.0f} s and restarted",
        f"- failures: {failures}"
        + (
            f" (sent {min(result['failed_at_s']):.2f}-{max(result['failed_at_s']):.2f} s: "
            f"to the killed worker, or within the {result['failure_window_s']:g} s a client's reconnect may wait)"
            if result["failed_at_s"]
            else ""
        ),
        f"- p99 before the kill {result['p99_before_ms']:.1f} ms, "
        f"after the replacement {result['p99_after_ms']:.1f} ms",
        f"- server memory {result['memory_start_mb']:.0f} MB at start, {result['memory_end_mb']:.0f} MB at end "
        f"(bound: +{result['memory_bound_mb']:.0f} MB)",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 seconds")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--update-docs", action="store_true", help="put the figures in docs/reliability.md")
    args = parser.parse_args()
    seconds = 10.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="forwardpass-soak-", ignore_cleanup_errors=True) as work:
        models = shutil.copytree(ROOT / "models", Path(work) / "models")
        port, server = serve(forwardpass_command(args.workers, models), output=None)
        try:
            time.sleep(0.5)  # every worker up
            result = asyncio.run(soak(f"127.0.0.1:{port}", server, seconds, args.concurrency))
        finally:
            peers.stop(server)
    stem = "soak-quick" if args.quick else "soak"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text("# Soak (bench/soak.py)\n\n" + markdown(result))
    print(markdown(result))
    if args.update_docs:
        from markers import replace_section

        replace_section("soak", markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
