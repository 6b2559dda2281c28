"""Where a request's CPU goes, stage by stage: forwardpass with 1 worker beside the bare inference server.

    python bench/request_profile.py             # 3 runs (make bench): about 4 minutes
    python bench/request_profile.py --quick     # 1 run, a second sampled per cell (CI)

For each door (HTTP JSON batch 1, HTTP binary 65,536 rows, gRPC batch 1, gRPC 65,536 rows), forwardpass
as deployed (1 worker, the token checked, metrics served, statistics and limits on as always) and the bare
inference server of that door (bench/bare_inference.py) each take requests at 1 in flight (h2load --h1 for
HTTP, bench/loadgen.py for gRPC, the serve bench's loads) while py-spy samples the serving process:

    py-spy record --pid PID --threads --nonblocking --rate 1000 --format raw --duration 1 --output stacks.txt

--nonblocking reads the stacks without stopping the process: it runs at full speed, and py-spy can tell
a thread that waits (its samples are dropped) from one that works. Each sample is given to the stage of
its innermost frame that STAGES names (`decode` called from `read` counts as decode). Each thread's CPU
over the sampled window (/proc/PID/task/TID/stat) is shared out by its samples' stages, and divided by
the requests answered meanwhile: µs per request. The CPU of threads py-spy does not see (gRPC's C++
core) and samples no stage names (the event loop's own C code: sockets, HTTP parsing, protobuf) make
`loop and transport`.

Results: bench/results/profile.{json,md}, each figure the median of the runs with min and max.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import peers  # noqa: E402
from closed_loop import METHOD  # noqa: E402
from procfs import process_tree  # noqa: E402
from report import machine, progress, write_results  # noqa: E402
from serve import Bench, Target, bare_inference_command, server_statistics  # noqa: E402
from servers import forwardpass_command, request_bytes, start, wait_answering  # noqa: E402

RATE = 1000  # samples per second
TICKS = os.sysconf("SC_CLK_TCK")  # /proc's CPU times are in these
# (seconds py-spy samples, from when): within the serve bench's measured window of a cell (serve.py's
# CELL_SECONDS: after 1 s of warm-up, 2 s; --quick: 0.3 s, then 1 s), so that every sample falls where
# requests are coming.
SAMPLING = {False: (1, 1.5), True: (1, 0.3)}
# (stage, what it holds, the frames that are it): a frame is `function (file:line)` as py-spy writes it,
# and matches a pattern `file.py`, `file.py:function` or `:function` (any file). A sample goes to the
# stage of its innermost matching frame; in a frame matched twice, the first stage listed wins.
STAGES = (
    ("compute", "onnxruntime's run, through forwardpass.runtime (both servers' session)",
     ("forwardpass/runtime.py", "onnxruntime/")),
    ("stats", "counting the request into the workers' table (server/stats.py)", ("server/stats.py",)),
    ("auth", "the token, Host and Origin checks", ("credentials.py", "server/security.py", ":RestApp._authorize",
     ":RestApp._check_host", ":RestApp._host_is_allowed", ":RestApp._check_origin", ":RestApp.needs_token")),
    ("route", "the path's route, the model's lookup", (":RestApp._find_route", ":_match", ":_path", ":_model",
     "server/repository.py", ":DataPlane.model", ":DataPlane.find", ":DataPlane.input_bound")),
    ("decode", "body or message to arrays", ("server/restcodec.py:infer_request", "server/restcodec.py:_request",
     "server/restcodec.py:_from_json", "server/restcodec.py:_input", "server/restcodec.py:_numbers",
     "server/restcodec.py:_json", "server/jsonslices.py", "server/codec.py:infer_request", "server/codec.py:_input",
     "server/codec.py:parameters", "bare_inference.py:http_request", "bare_inference.py:infer")),
    ("validate", "the request checked against the model, the limits and its deadline",
     ("server/inference.py", ":RestApp._check_values", ":RestApp._body_limits", ":_check_deadline")),
    ("encode", "arrays to the answer", ("server/restcodec.py:infer_response", "server/restcodec.py:json_values",
     "server/codec.py:infer_response", "bare_inference.py:http_answer", "bare_inference.py:grpc_answer")),
    ("read", "the body gathered, uvicorn's HTTP parser", (":RestApp._body", ":RestApp._hold",
     "httptools_impl.py:HttpToolsProtocol", "httptools_impl.py:RequestResponseCycle.receive",
     "server/httpd.py:_TimedProtocol", "proxy_headers.py")),
    ("send", "the answer handed to the socket", ("httptools_impl.py:RequestResponseCycle.send",)),
    # The request's own frames only: a thread's lifetime frames (the worker's main, the servers' run) are
    # in every sample of that thread, the loop's among them.
    ("dispatch", "the doors' and the data plane's own code between the stages; thread hand-offs",
     ("server/rest.py", "server/servicer.py", "server/errors.py", "server/dataplane.py", "server/model.py",
      "bare_inference.py:app", "asyncio/threads.py", "concurrent/futures/thread.py:_WorkItem.run",
      "asyncio/futures.py")),
)  # fmt: skip
# Frames of a thread that waits: its samples count for nothing (py-spy takes some waits for work).
WAITING = ("concurrent/futures/thread.py:_worker", "server/workers.py:SignalWakeup.wait", "threading.py:Thread.run")
LOOP = "loop and transport"
DOORS = (("HTTP", "JSON batch 1", 1), ("HTTP", "binary 65,536 rows", 65536), ("gRPC", "batch 1", 1),
         ("gRPC", "65,536 rows", 65536))  # fmt: skip
OURS, BARE = "forwardpass, 1 worker", "bare inference server"
# forwardpass's worker as deployed around the bare server's handlers (bench/bare_in_worker.py): between the
# two, it splits what forwardpass adds into the worker's own cost and the per-request work of its handlers.
WORKER = "forwardpass's worker, bare handlers"
SERVERS = (OURS, WORKER, BARE)


def frame_parts(frame: str) -> tuple[str, str]:
    """`function (path/file.py:line)` as (path/file.py, function)."""
    function, _, where = frame.rpartition(" (")
    return where.rsplit(":", 1)[0], function


def matches(frame: tuple[str, str], pattern: str) -> bool:
    path, function = frame
    where, _, name = pattern.partition(":")
    return (not where or path.endswith(where) or where.endswith("/") and where in path) and (
        not name or function == name
    )


def stage_of(stack: list[str]) -> str | None:
    """The stage of a sample's stack (outermost frame first), None when it waits, LOOP when no stage names it."""
    frames = [frame_parts(f) for f in stack if f.endswith(")") and " (" in f]
    if frames and any(matches(frames[-1], pattern) for pattern in WAITING):
        return None
    for frame in reversed(frames):
        for stage, _, patterns in STAGES:
            if any(matches(frame, pattern) for pattern in patterns):
                return stage
    return LOOP


def split(stacks: str, requests: float, thread_cpu: dict[int, float]) -> dict[str, float]:
    """µs per request by stage: each thread's CPU over the sampled window (seconds, from /proc) shared out
    by its samples' stages. A thread py-spy does not see (gRPC's C++ threads), and a Python thread's
    samples no stage names, count as LOOP."""
    samples: dict[int, Counter[str]] = {}
    for line in stacks.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        tid = int(frames[0].split("(", 1)[1].split(")", 1)[0])  # "thread (TID): name", with --threads
        stage = stage_of(frames[1:])
        if stage is not None:
            samples.setdefault(tid, Counter())[stage] += int(count)
    us = dict.fromkeys([*(stage for stage, _, _ in STAGES), LOOP], 0.0)
    for tid, seconds in thread_cpu.items():
        per_request = seconds / requests * 1e6
        seen = samples.get(tid)
        if not seen:
            us[LOOP] += per_request
            continue
        total = sum(seen.values())
        for stage, count in seen.items():
            us[stage] += per_request * count / total
    us["total"] = sum(thread_cpu.values()) / requests * 1e6
    return us


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process so far (utime + stime)."""
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a thread that just ended
            continue
        seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return seconds


class Profile:
    """Each door's two servers, run after run, sampled under load."""

    def __init__(self, args: argparse.Namespace, py_spy: str) -> None:
        self.args, self.py_spy = args, py_spy
        # The serve bench's requests, answers and loads (its cells at 1 in flight), without its targets.
        self.bench = Bench(argparse.Namespace(quick=args.quick, workers=1, no_peers=True, history=False))
        self.sampled, self.sample_from = SAMPLING[args.quick]
        self.work = self.bench.work
        self.results: list[dict] = []
        self.guarded: list[dict] = []  # forwardpass's token and statistics, checked around each door's cells

    def run(self) -> None:
        steps, step = self.args.runs * len(SERVERS), 0
        for run in range(self.args.runs):
            for server in SERVERS:
                step += 1
                progress(step, steps, f"run {run + 1}: {server}")
                for door in ("HTTP", "gRPC"):
                    self._server(server, door, run)

    def _server(self, server: str, door: str, run: int) -> None:
        target = Target(door, http=door == "HTTP")
        if server in (OURS, WORKER):
            command = forwardpass_command(1, ROOT / "models", peers.free_port(), token_file=self.work / "token")
            if server == WORKER:  # `python -m forwardpass serve ...` as `python bench/bare_in_worker.py serve ...`
                command = [command[0], str(ROOT / "bench" / "bare_in_worker.py"), *command[3:]]
            grpc_port, process = start(command)
            http_port = int(command[command.index("--http-port") + 1])
        else:
            grpc_port, process = start(bare_inference_command(door.lower()))
            http_port = grpc_port
        try:
            if door == "gRPC" or server != BARE:
                wait_answering(grpc_port, process, timeout=120)
            else:  # the bare HTTP server answers readiness (any method but POST) with 200
                peers.wait_http_ready(http_port, process, timeout=120)
            if door == "HTTP":
                self.bench._check_http(target, http_port)  # 200 and onnxruntime's y, both bodies
            pid = process.pid if server == BARE else _worker(process.pid)
            before = server_statistics(grpc_port)["success"]["count"] if server == OURS else None
            for each, cell, rows in DOORS:
                if each == door:
                    port = http_port if door == "HTTP" else grpc_port
                    result = self._sampled(pid, process, target, port, rows)
                    self.results.append({"run": run, "server": server, "door": door, "cell": cell, **result})
            if server == OURS:  # guarded as deployed: a call without the token is refused; every answer counted
                self.guarded.append(
                    {
                        "door": door,
                        "refused_without_token": _refused_without_token(grpc_port),
                        "counted": server_statistics(grpc_port)["success"]["count"] - before,
                    }
                )
        finally:
            peers.stop(process)

    def _sampled(self, pid: int, process: subprocess.Popen, target: Target, port: int, rows: int) -> dict:
        """One cell at 1 in flight, with py-spy sampling the serving process within its measured window."""
        stacks = self.work / f"stacks-{pid}-{rows}.txt"
        command = [self.py_spy, "record", "--pid", str(pid), "--threads", "--nonblocking", "--rate", str(RATE),
                   "--format", "raw", "--duration", str(self.sampled), "--output", str(stacks)]  # fmt: skip
        sampler: list[subprocess.CompletedProcess] = []
        spent: dict[int, float] = {}

        def sample() -> None:
            time.sleep(self.sample_from)
            before = thread_cpu(pid)
            sampler.append(subprocess.run(command, capture_output=True, text=True, timeout=self.sampled + 60))
            after = thread_cpu(pid)
            spent.update({tid: after[tid] - before.get(tid, 0.0) for tid in after})

        thread = threading.Thread(target=sample)
        thread.start()
        if target.http:
            cell = self.bench._http_cell(target, port, process, 1, rows)
        else:
            cell = self.bench._cell(port, process, 1, rows)
        thread.join()
        if not sampler or sampler[0].returncode != 0 or not stacks.exists():
            raise SystemExit(f"py-spy failed: {sampler[0].stderr[-500:] if sampler else 'did not run'}")
        us = split(stacks.read_text(), cell["req_per_s"] * self.sampled, spent)
        return {"us": us, "req_per_s": cell["req_per_s"], "errors": cell["errors"]}


def _refused_without_token(port: int) -> bool:
    """Whether forwardpass refuses a ModelInfer that carries no token (UNAUTHENTICATED)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            channel.unary_unary(METHOD)(request_bytes(1), timeout=10)
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


def _worker(supervisor: int) -> int:
    """The worker process of a 1-worker forwardpass (the supervisor's child), once it exists."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = [p for p in process_tree(supervisor) if p != supervisor]
        if children:
            return children[0]
        time.sleep(0.1)
    raise RuntimeError("forwardpass started no worker")


def aggregate(results: list[dict]) -> list[dict]:
    """Per door and server, each stage's median over the runs, with min and max."""
    rows = []
    for door, cell, _ in DOORS:
        for server in SERVERS:
            runs = [r for r in results if r["cell"] == cell and r["door"] == door and r["server"] == server]
            if not runs:
                continue
            stages = {
                stage: [statistics.median(v), min(v), max(v)]
                for stage in runs[0]["us"]
                for v in [[r["us"][stage] for r in runs]]
            }
            errors = sum(sum(r["errors"].values()) for r in runs)
            req_per_s = [r["req_per_s"] for r in runs]
            rows.append({"door": door, "cell": cell, "server": server, "runs": len(runs), "us": stages,
                         "req_per_s": [statistics.median(req_per_s), min(req_per_s), max(req_per_s)],
                         "errors": errors})  # fmt: skip
    return rows


PROFILE_TEXT = (
    "One request at a time (1 in flight), forwardpass as deployed (1 worker, the token checked, metrics served, "
    "statistics and the robustness limits on) beside the bare inference server of the same door "
    "(bench/bare_inference.py: one process, the same stack and onnxruntime session, no checks), and between "
    "them forwardpass's worker with the bare server's handlers in place of its own (bench/bare_in_worker.py: "
    "the same processes, threads, gRPC token check and HTTP header limits around the bare server's work). "
    "py-spy samples "
    "the serving process 1,000 times a second without stopping it while the serve bench's load runs; each sample "
    "goes to the stage of its innermost frame that bench/request_profile.py's STAGES names, and each thread's CPU "
    "over the window (from /proc) is shared out by its samples, per request answered. `loop and transport` is "
    "the CPU no named stage holds: the event loop's and gRPC's C code (sockets, HTTP/2, protobuf). "
    "Medians over the runs, min-max in brackets; a stage of forwardpass over 10% of the bare server's total is "
    "marked, and docs/speed.md says why it is there."
)
SPLIT_TEXT = (
    "Worker CPU per request and requests a second of the three, and each one's requests a second over the bare "
    "server's, taken within each run (median, min-max). What the worker costs is the middle column against the "
    "bare server; what forwardpass's own handling of a request costs is the first against the middle."
)


def _us(values: list[float]) -> str:
    median, low, high = values
    return f"{median:,.1f} ({low:,.1f}-{high:,.1f})"


def _ratio(raw: list[dict], door: str, cell: str, server: str) -> str:
    """A server's requests a second over the bare server's, taken within each run: median (min-max)."""
    by_run: dict[int, dict[str, float]] = {}
    for r in raw:
        if r["door"] == door and r["cell"] == cell:
            by_run.setdefault(r["run"], {})[r["server"]] = r["req_per_s"]
    ratios = [runs[server] / runs[BARE] for runs in by_run.values() if server in runs and runs.get(BARE)]
    if not ratios:
        return "-"
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def markdown(report: dict) -> str:
    host = report["machine"]
    lines = ["# Where a request's CPU goes", "", PROFILE_TEXT, "",
             f"{report['runs']} run(s), {host['date']}: {host['cpu']}, {host['cores']} cores, Python {host['python']}, "
             f"onnxruntime {host['onnxruntime']}, grpcio {host['grpcio']}."]  # fmt: skip
    cells = []
    for door, cell, _ in DOORS:
        rows = {r["server"]: r for r in report["rows"] if r["door"] == door and r["cell"] == cell}
        if {OURS, BARE} <= set(rows):
            cells.append((door, cell, rows))
    lines += ["", "## forwardpass, its worker, the bare server", "", SPLIT_TEXT, "",
              "| door | cell | CPU µs/req: forwardpass / worker, bare handlers / bare "
              "| req/s: forwardpass / worker / bare | forwardpass / bare | worker / bare |",
              "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for door, cell, rows in cells:
        servers = [rows.get(server) for server in SERVERS]
        cpu = " / ".join(f"{r['us']['total'][0]:,.0f}" if r else "-" for r in servers)
        rate = " / ".join(f"{r['req_per_s'][0]:,.0f}" if r and "req_per_s" in r else "-" for r in servers)
        lines.append(f"| {door} | {cell} | {cpu} | {rate} | {_ratio(report['raw'], door, cell, OURS)} | "
                     f"{_ratio(report['raw'], door, cell, WORKER)} |")  # fmt: skip
    what = dict(report["stages"]) | {LOOP: "the rest of the process's CPU: event loop, sockets, gRPC core"}
    for door, cell, rows in cells:
        ours, bare, worker = rows[OURS]["us"], rows[BARE]["us"], rows[WORKER]["us"] if WORKER in rows else None
        bare_total = bare["total"][0]
        lines += ["", f"## {door} {cell}", "",
                  "| stage | what it holds | forwardpass µs | worker, bare handlers µs | bare µs "
                  "| forwardpass, % of the bare total |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
        for stage in [*what, "total"]:
            share = ours[stage][0] / bare_total * 100
            flag = " **over 10%**" if stage != "total" and share > 10 else ""
            middle = _us(worker[stage]) if worker else "-"
            lines.append(f"| {stage} | {what.get(stage, 'CPU per request')} | {_us(ours[stage])} | {middle} | "
                         f"{_us(bare[stage])} | {share:.0f}%{flag} |")  # fmt: skip
        errors = sum(r["errors"] for r in rows.values())
        if errors:
            lines.append(f"\n{errors} failed request(s) in these runs.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 run, a second sampled per cell (CI)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--report", type=Path, help="only write the Markdown (and a copy of the JSON) from this JSON")
    args = parser.parse_args()
    if args.report:
        report = json.loads(args.report.read_text())
    else:
        args.runs = 1 if args.quick else args.runs
        # This Python's own first (a virtualenv's bin need not be on PATH), then PATH.
        py_spy = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
        if py_spy is None:
            raise SystemExit("the profile needs py-spy: pip install py-spy (forwardpass[test] has it)")
        profile = Profile(args, py_spy)
        try:
            profile.run()
        finally:
            shutil.rmtree(profile.work, ignore_errors=True)
        report = {"machine": machine(), "runs": args.runs, "seconds": SAMPLING[args.quick][0], "rate": RATE,
                  "stages": [[s, what] for s, what, _ in STAGES], "rows": aggregate(profile.results),
                  "guarded": profile.guarded, "raw": profile.results}  # fmt: skip
    write_results(args.out, "profile", report, markdown(report))  # with --report, its JSON as it was read
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
