"""Python HTTP stacks serving the V2 infer call, side by side: the measurement behind forwardpass's HTTP door.

The baseline is the stack forwardpass serves HTTP with (uvicorn, httptools, uvloop, a raw ASGI app); the
others are those it could have used instead.

    python bench/http_stacks.py            # 3 repeats of 5 s cells: about 10 minutes
    python bench/http_stacks.py --quick    # 1 repeat of 2 s cells: a smoke check, about 2 minutes
    python bench/http_stacks.py --report bench/results/http_stacks.json   # only write the report again

Every candidate (bench/http_stacks/) serves the same infer call with the same work behind it
(bench/http_stacks/v2.py: decode, NumPy arrays, a fixed answer, encode), the JSON through the stdlib's
json module unless the name says orjson. Each runs as one process on 127.0.0.1, pinned to CPU 0, in a
virtualenv of its own built on first use (about a minute) under ~/.cache/forwardpass-peers/http-stacks,
so that the project's environment needs none of them. The load is h2load --h1 (bench/serve_http.py, the
serving benchmark's HTTP cells: the same requests and cells), pinned to CPU 1. Each repeat starts every
stack once, in an order rotated from one repeat to the next, and runs its cells; every figure is also
given as a ratio to the baseline stack in the same repeat, the median and min-max of those ratios over
the repeats. Requests per server CPU-second hold steadier than requests per second when other work
shares the machine. Results: bench/results/http_stacks.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import peers  # noqa: E402  (bench/peers: the virtualenvs)
import serve_http  # noqa: E402  (the HTTP requests, and h2load --h1 as the load)
from report import errors_cell, machine, progress  # noqa: E402
from servers import request_array, start  # noqa: E402

APPS = ROOT / "bench" / "http_stacks"
VENV = "http-stacks"
# The versions measured, all pinned so that one run compares with the next.
PACKAGES = [
    "uvicorn==0.54.0",
    "httptools==0.9.0",
    "uvloop==0.23.0",
    "h11==0.16.0",
    "starlette==1.10.0",
    "fastapi==0.165.0",
    "pydantic==2.14.4",
    "anyio==4.16.0",
    "granian==2.8.9",
    "orjson==3.13.0",
    "numpy==2.4.6",
]
peers.VENV_PACKAGES[VENV] = PACKAGES  # built and reused by peers.ensure_venv, as the peers' venvs are
SERVER_CPU, LOAD_CPU = 0, 1
HOST = peers.HOST


def uvicorn(app: str, http: str = "httptools", loop: str = "uvloop") -> Callable[[Path], list[str]]:
    def command(python: Path) -> list[str]:
        options = ["--host", HOST, "--http", http, "--loop", loop, "--lifespan", "off", "--backlog", "2048"]
        logs = ["--no-access-log", "--log-level", "warning"]
        return [str(python), "-m", "uvicorn", app, "--app-dir", str(APPS), *options, *logs]

    return command


def granian(python: Path) -> list[str]:
    options = ["--interface", "asgi", "--host", HOST, "--workers", "1", "--runtime-threads", "1", "--loop", "uvloop"]
    options += ["--http", "1", "--no-ws", "--backlog", "2048", "--log-level", "warning"]
    return [str(python), "-m", "granian", *options, "--working-dir", str(APPS), "app_raw:app"]


def stdlib(python: Path) -> list[str]:
    return [str(python), str(APPS / "server_stdlib.py")]


BASELINE = "uvicorn + httptools + uvloop, raw ASGI"
# name -> its command line, given the venv's python; servers.start adds --port.
STACKS: dict[str, Callable[[Path], list[str]]] = {
    BASELINE: uvicorn("app_raw:app"),
    "uvicorn + httptools + uvloop, raw ASGI, orjson": uvicorn("app_raw:app_orjson"),
    "Starlette (uvicorn + httptools + uvloop)": uvicorn("app_starlette:app"),
    "FastAPI (uvicorn + httptools + uvloop)": uvicorn("app_fastapi:app"),
    "uvicorn + h11 + asyncio, raw ASGI": uvicorn("app_raw:app", "h11", "asyncio"),
    "stdlib ThreadingHTTPServer": stdlib,
    "granian ASGI (1 worker, 1 runtime thread, uvloop)": granian,
}


class Bench:
    """Starts every stack once per repeat, runs the cells on it, and keeps the raw results."""

    def __init__(self, args: argparse.Namespace, python: Path) -> None:
        self.args, self.python = args, python
        self.work = Path(tempfile.mkdtemp(prefix="forwardpass-http-stacks-"))
        self.requests = {1: serve_http.json_request(request_array(1))}
        self.requests[serve_http.LARGE] = serve_http.binary_request(request_array(serve_http.LARGE))
        for rows, request in self.requests.items():
            request.path = self.work / f"request-{rows}.bin"
            request.path.write_bytes(request.body)
        self.pinned = not args.no_pin and (os.cpu_count() or 1) > 1 and shutil.which("taskset") is not None
        self.results: list[dict] = []

    def run(self, names: list[str]) -> None:
        if self.pinned:  # h2load, started from here, inherits it
            os.sched_setaffinity(0, {LOAD_CPU})
        steps, step = self.args.repeats * len(names), 0
        for repeat in range(self.args.repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                step += 1
                progress(step, steps, f"repeat {repeat + 1}: {name}")
                self._measure(name, repeat)

    def _measure(self, name: str, repeat: int) -> None:
        command = STACKS[name](self.python)
        if self.pinned:
            command = ["taskset", "-c", str(SERVER_CPU), *command]
        log = self.work / f"server-{repeat}-{len(self.results)}.log"
        with open(log, "wb") as output:
            port, process = start(command, output.fileno())
        try:
            wait_answering(port, process, log, timeout=60)
            for label, concurrency, rows in serve_http.CELLS:
                h2load_log = self.work / f"h2load-{len(self.results)}.log"  # h2load appends to a log it finds
                cell = serve_http.cell(
                    port, process, self.requests[rows], concurrency, self.args.warmup, self.args.seconds, h2load_log
                )
                self.results.append({"stack": name, "repeat": repeat, "cell": label, **cell})
        finally:
            peers.stop(process)


def wait_answering(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Send a JSON and a binary request until the stack answers both right; raise with its log if it exits,
    answers wrong, or time runs out."""
    requests = [(serve_http.json_request(request_array(1)), 1), (serve_http.binary_request(request_array(5)), 5)]
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before answering:\n{log.read_text()[-3000:]}")
        try:
            for request, rows in requests:
                status, headers, body = serve_http.post(port, request, timeout=5)
                if status != 200 or serve_http.answer_y(headers, body).shape != (rows, 1):
                    raise RuntimeError(f"answers {request.encoding} with HTTP {status}: {body[:300]!r}")
            return
        except OSError:  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"not answering after {timeout:.0f} s:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.2)


def per_cpu_second(result: dict) -> float | None:
    """Requests per CPU-second of the server's whole process tree."""
    return result["req_per_s"] / result["server_cores"] if result["server_cores"] else None


METRICS = {"req_per_s": lambda r: r["req_per_s"], "req_per_cpu_s": per_cpu_second}


def aggregate(results: list[dict], baseline: str) -> list[dict]:
    """Per stack and cell: medians and min-max over repeats, and each repeat's ratio to the baseline's same cell."""
    by = {(r["stack"], r["cell"], r["concurrency"], r["repeat"]): r for r in results}
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["stack"], r["cell"], r["concurrency"]), []).append(r)
    rows = []
    for (stack, cell, concurrency), runs in groups.items():
        row = {"stack": stack, "cell": cell, "concurrency": concurrency, "encoding": runs[0]["encoding"]}
        row["repeats"] = len(runs)
        for key, metric in METRICS.items():
            pairs = [(metric(r), by.get((baseline, cell, concurrency, r["repeat"]))) for r in runs]
            row[key] = spread([value for value, _ in pairs if value is not None])
            ratios = [value / metric(base) for value, base in pairs if value is not None and base and metric(base)]
            row[f"{key}_ratio"] = spread(ratios)
        for key in ("p50_ms", "p99_ms", "server_cores", "client_cores", "machine_cores"):
            values = [r[key] for r in runs if r.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        row["errors"] = dict(sum((Counter(r["errors"]) for r in runs), Counter()))
        rows.append(row)
    return rows


def spread(values: list[float]) -> dict | None:
    """Median, min and max; None without values."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# ------------------------------------------------------------------------------------------------ the report

LOAD = (
    "Load: h2load --h1 (one thread, one HTTP/1.1 connection per request in flight) with the serving benchmark's "
    "HTTP requests (bench/serve_http.py): batch 1 as JSON, 65,536 rows with Triton's binary tensor extension."
)
# What the timings do not show, checked by hand on the pinned versions (not by this script).
NOTES = """\
Checked on 2026-11-27 with the versions above, by hand: not timed, and not rerun by this script.

- **Embedding.** forwardpass runs its HTTP door inside each worker process, beside the gRPC server, on a socket
  the worker binds itself with SO_REUSEPORT. uvicorn takes such a socket: `uvicorn.Server.serve(sockets=[sock])`
  on a pre-bound SO_REUSEPORT socket, in a thread of each of 2 forked workers, and both workers answered.
  granian's embedded server (`granian.server.embed.Server`) takes an address and port and binds them itself (no
  socket argument); two processes on one port both answered, but a worker cannot hand it the socket it bound.
- **TLS.** Mutual TLS works on both: uvicorn with `--ssl-ca-certs` and `--ssl-cert-reqs 2`, granian with
  `--ssl-ca` and `--ssl-client-verify` answered HTTP 200 to a client with a certificate the CA signed, and
  nothing to one without (curl exit 52, empty reply, and 55, failed send).
- **Limits: slow clients.** For 20 s, one client connected and sent nothing, one sent its headers at 1 byte/s,
  one a 100,000-byte body at 10 bytes/s. uvicorn (httptools or h11, default settings) kept all three open;
  granian with `--http1-header-read-timeout 5000` closed the idle and the slow-header ones after 5 s and kept the
  slow body; the stdlib server with a 5 s socket timeout closed the idle one after 5 s and kept the other two
  (each byte restarts its timeout). forwardpass puts its own deadlines on uvicorn: 30 s for each request's
  headers (server/httpd.py), and a body that stops coming for 30 s loses its connection (server/rest.py).
"""


def markdown(report: dict) -> str:
    m = report["machine"]
    pinned = (
        f"Each stack one process pinned to CPU {SERVER_CPU}, h2load (one thread) pinned to CPU {LOAD_CPU}."
        if report["pinned"]
        else "Not pinned: the stacks and h2load share every core."
    )
    lines = [
        "# HTTP stacks for the V2 infer call",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['platform']}; Python {m['python']}; {m['date']}. "
        f"Versions: {', '.join(p.replace('==', ' ') for p in report['packages'])}.",
        "",
        f"{report['repeats']} repeat(s) of {report['seconds']:g} s cells after a {report['warmup']:g} s warm-up; each "
        "repeat starts every stack once, in an order rotated from one repeat to the next. "
        f"{pinned} {LOAD} Every stack does the same work for the call (bench/http_stacks/v2.py: decode, "
        "NumPy arrays, a fixed answer of one float32 column per row, encode), its JSON through the stdlib's json "
        "module unless the name says orjson. Figures are medians with min-max over repeats; **x baseline** is each "
        f"repeat's figure over the baseline's ({report['baseline']}) in the same repeat and cell, median and min-max "
        "of those ratios. Requests per server CPU-second (all threads of the server's process tree) are the steadier "
        "figure where other work shares the machine. Rerun: `python bench/http_stacks.py` (`--quick`: 1 repeat of "
        "2 s cells).",
    ]
    for text in (load(report), report.get("source"), report.get("note")):
        if text:
            lines += ["", text]
    lead = f"Ratios to {report['baseline']}, JSON batch 1 at 1 / 16 / 64 in flight, then 65,536 rows binary at 1:"
    lines += ["", "## Headline", "", lead, "", *[f"- {line}" for line in headline(report)]]
    for label, concurrency, _rows in serve_http.CELLS:
        rows = [c for c in report["cells"] if c["cell"] == label and c["concurrency"] == concurrency]
        if rows:
            lines += ["", *table(rows)]
    if NOTES.strip():
        lines += ["", "## Beyond speed: embedding, TLS, limits", "", NOTES.strip()]
    return "\n".join(lines) + "\n"


def load(report: dict) -> str:
    """What the CPU readings say of other work on the machine during the cells."""
    cells = report["cells"]
    out = []
    busiest = [c["server_cores"] for c in cells if c["concurrency"] == 64 and c["server_cores"] is not None]
    if report["pinned"] and busiest:
        out.append(
            f"At 64 in flight, where a stack alone on its core keeps it busy, the servers had {min(busiest):.2f}-"
            f"{max(busiest):.2f} of it (medians per stack); below 1, other work shared the core."
        )
    others = [
        c["machine_cores"] - c["server_cores"] - c["client_cores"]
        for c in cells
        if None not in (c["machine_cores"], c["server_cores"], c["client_cores"])
    ]
    if others:
        out.append(
            f"Cores busy with other work than the server and h2load: {statistics.median(others):.2f} "
            f"(median over cells; {min(others):.2f}-{max(others):.2f}) of {report['machine']['cores']}."
        )
    return " ".join(out)


def table(rows: list[dict]) -> list[str]:
    """One cell's table: a row per stack."""
    encoding, label = rows[0]["encoding"], rows[0]["cell"]
    lines = [
        f"## {label if encoding in label else f'{label} ({encoding})'}, {rows[0]['concurrency']} in flight",
        "",
        "| stack | req/s | x baseline | req per server CPU-s | x baseline | p50 ms | p99 ms | server cores | "
        "client cores | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in rows:
        lines.append(
            f"| {c['stack']} | {_count(c['req_per_s'])} | {_ratio(c['req_per_s_ratio'])} | "
            f"{_count(c['req_per_cpu_s'])} | {_ratio(c['req_per_cpu_s_ratio'])} | {_f(c['p50_ms'])} | "
            f"{_f(c['p99_ms'])} | {_f(c['server_cores'])} | {_f(c['client_cores'])} | {errors_cell(c['errors'])} |"
        )
    return lines


def headline(report: dict) -> list[str]:
    """Each stack against the baseline: the median ratios, per server CPU-second and per second, cell by cell."""
    cells = report["cells"]
    order = [(label, concurrency) for label, concurrency, _ in serve_http.CELLS]
    out = []
    for stack in dict.fromkeys(c["stack"] for c in cells):
        if stack == report["baseline"]:
            continue
        by = {(c["cell"], c["concurrency"]): c for c in cells if c["stack"] == stack}

        def ratios(key: str, by=by) -> str:
            return " / ".join(_x(by[k][key]) if k in by else "-" for k in order)

        per_cpu, per_second = ratios("req_per_cpu_s_ratio"), ratios("req_per_s_ratio")
        out.append(f"{stack}: per server CPU-second **{per_cpu}**; per second {per_second}")
    errors = sum(sum(c["errors"].values()) for c in cells)
    out.append(f"failed requests and answers other than 2xx, all stacks and cells: **{errors}**")
    return out


def _x(value: dict | None) -> str:
    return f"{value['median']:.2f}x" if value else "-"


def _ratio(value: dict | None) -> str:
    return f"{value['median']:.2f} ({value['min']:.2f}-{value['max']:.2f})" if value else "-"


def _count(value: dict | None) -> str:
    return f"{value['median']:,.0f} ({value['min']:,.0f}-{value['max']:,.0f})" if value else "-"


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ------------------------------------------------------------------------------------------------ first version

# The first version of this benchmark wrote {stack: {cell: [one result per repeat]}}.
FIRST_STACKS = {
    "uvicorn+httptools+uvloop raw ASGI": BASELINE,
    "  same, orjson": "uvicorn + httptools + uvloop, raw ASGI, orjson",
    "Starlette (uvicorn+httptools+uvloop)": "Starlette (uvicorn + httptools + uvloop)",
    "FastAPI (uvicorn+httptools+uvloop)": "FastAPI (uvicorn + httptools + uvloop)",
    "uvicorn+h11+asyncio raw ASGI": "uvicorn + h11 + asyncio, raw ASGI",
    "stdlib ThreadingHTTPServer": "stdlib ThreadingHTTPServer",
    "granian ASGI (1 worker, 1 rt thread, uvloop)": "granian ASGI (1 worker, 1 runtime thread, uvloop)",
}
FIRST_CELLS = {
    "json c1": ("JSON batch 1", 1, "JSON"),
    "json c16": ("JSON batch 1", 16, "JSON"),
    "json c64": ("JSON batch 1", 64, "JSON"),
    "binary c1": ("65,536 rows", 1, "binary"),
}
FIRST_SOURCE = (
    "Measured with the first version of this benchmark: the same stacks, versions, pinning, cells and h2load "
    "--h1 load, 3 repeats of 5 s cells after 1 s of warm-up. It differed in the details: the server's CPU was "
    "read over the whole h2load run (warm-up included) and req/s taken from h2load's summary; the JSON request "
    "was x = [[1, 2, 3]] for a fixed answer of 2 floats; the binary request did not ask for binary outputs "
    "(they came binary all the same); errors were h2load's failed and errored requests and 4xx/5xx answers; "
    "no whole-machine CPU reading."
)


def from_first_version(results: dict, path: Path) -> dict:
    """A report from the first version's results file; its date is the file's, its machine this one."""
    raw = []
    for first, stack in FIRST_STACKS.items():
        for key, (label, concurrency, encoding) in FIRST_CELLS.items():
            for repeat, r in enumerate(results.get(first, {}).get(key, [])):
                raw.append(
                    {
                        "stack": stack,
                        "repeat": repeat,
                        "cell": label,
                        "concurrency": concurrency,
                        "encoding": encoding,
                        "req_per_s": r["rps"],
                        "p50_ms": r["p50_ms"],
                        "p99_ms": r["p99_ms"],
                        "errors": {"failed or non-2xx": r["bad"]} if r["bad"] else {},
                        "server_cores": r["srv_cpu"],
                        "client_cores": r["gen_cpu"],
                    }
                )
    when = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    return {
        "machine": {**machine(), "date": when.strftime("%Y-%m-%d %H:%M UTC")},
        "quick": False,
        "repeats": 1 + max(r["repeat"] for r in raw),
        "seconds": 5.0,
        "warmup": 1.0,
        "pinned": True,
        "packages": PACKAGES,
        "baseline": BASELINE,
        "source": FIRST_SOURCE,
        "cells": aggregate(raw, BASELINE),
        "raw": raw,
    }


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat of 2 s cells: a smoke check")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each cell's measure")
    parser.add_argument("--only", help="comma-separated parts of stack names (the baseline always runs)")
    parser.add_argument("--no-pin", action="store_true", help="let the stacks and h2load share every core")
    parser.add_argument("--root", type=Path, default=peers.default_root() / VENV, help="where the venv is (made once)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--note", help="a sentence for the report, such as what else ran on the machine")
    parser.add_argument(
        "--report", type=Path, help="only write the JSON and Markdown again from this JSON (or the first version's)"
    )
    args = parser.parse_args()
    if args.report:
        report = json.loads(args.report.read_text())
        if "raw" not in report:
            report = from_first_version(report, args.report)
        if args.note:
            report["note"] = args.note
        return write(report, args.out)
    if args.quick:
        args.repeats, args.seconds, args.warmup = 1, 2.0, 0.5
    names = [n for n in STACKS if not args.only or any(part.strip() in n for part in args.only.split(","))]
    names = [BASELINE, *(n for n in names if n != BASELINE)]
    bench = Bench(args, peers.ensure_venv(VENV, args.root))
    try:
        bench.run(names)
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    report = {
        "machine": machine(),
        "quick": args.quick,
        "repeats": args.repeats,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "pinned": bench.pinned,
        "packages": PACKAGES,
        "baseline": BASELINE,
        **({"note": args.note} if args.note else {}),
        "cells": aggregate(bench.results, BASELINE),
        "raw": bench.results,
    }
    return write(report, args.out)


def write(report: dict, out: Path) -> int:
    stem = "http_stacks-quick" if report["quick"] else "http_stacks"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    raise SystemExit(main())
