"""What a batch-1 request costs in forwardpass's handlers and in the bare inference server's, stage by stage.

    python bench/handler_costs.py            # make bench: about a minute
    python bench/handler_costs.py --quick    # fewer calls (CI)

The request profile (bench/request_profile.py) measures a request in a serving process and splits it by
sampling, which blurs stages of a few µs. This times the handlers' own Python exactly, in this process,
on the committed 3-4-1 model: the HTTP door's app (RestApp, the token on) called as uvicorn calls it when
a JSON body came with its headers, and the gRPC servicer's ModelInfer on the request's bytes parsed by its
deserializer (as grpc.aio hands each call a fresh message: protobuf makes its views anew) and its answer's
bytes as grpc sends them (forwardpass's ModelInfer writes them itself; the bare handler's message is
serialized by protobuf), beside the bare inference server's app and handler (bench/bare_inference.py) on
the same requests. The call context the gRPC handler reads (its deadline) is a stand-in with none; sockets
and the event loop's passes are not in these figures: they are the same for both servers.

Each stage is timed apart over CALLS calls, REPEATS times, and the fastest kept; the two servers' whole
calls are timed in turn, so that both see the same moments of this machine. The stages' sum differs
from the whole call by the code between them. Results: bench/results/handler-costs.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bare_inference  # noqa: E402
from closed_loop import TOKEN  # noqa: E402
from report import machine, write_results  # noqa: E402
from serve_http import binary_request, json_request  # noqa: E402
from servers import request_array, request_bytes  # noqa: E402

from forwardpass.protos import grpc_service_pb2 as pb  # noqa: E402
from forwardpass.runtime import Runtime  # noqa: E402
from forwardpass.server import codec, restcodec  # noqa: E402
from forwardpass.server.dataplane import DataPlane  # noqa: E402
from forwardpass.server.errors import parsing  # noqa: E402
from forwardpass.server.inference import validate  # noqa: E402
from forwardpass.server.options import ServeOptions  # noqa: E402
from forwardpass.server.repository import Repository  # noqa: E402
from forwardpass.server.rest import BodyLimits, RestApp  # noqa: E402
from forwardpass.server.servicer import InferenceServicer  # noqa: E402

MODEL = ROOT / "models" / "mlp_3_4_1" / "1" / "model.onnx"
LARGE = 65536  # rows of the large calls, as the serve bench's: raw bytes, computed on the event loop
# The chunks a large HTTP body comes in: uvicorn stops reading past 64 KiB that the app has not taken.
BODY_CHUNK = 64 * 1024
PATH = "/v2/models/mlp_3_4_1/infer"
CALLS = {False: 5000, True: 500}  # per timing, by --quick
REPEATS = {False: 7, True: 3}
LARGE_SHARE = 50  # a 65,536-row call is timed over a fiftieth as many calls: each takes 0.2-0.3 ms
# A large call's onnxruntime run (about 0.2 ms) moves by tens of µs from one timing to the next, as much as
# the handlers' whole difference: each large call is also timed with the run answered from a memo.
WITHOUT_COMPUTE = ", compute left out"
# forwardpass's stages of an HTTP call, timed apart (a stage over and over) and within whole calls (each
# once per call, between the others), compute left out: (row, owner, attribute).
STAGES = (
    ("body read under its limits", RestApp, "_body"),
    ("decode", restcodec, "infer_request"),
    ("data plane, all of it", DataPlane, "infer"),
    ("encode", restcodec, "infer_response"),
)
OURS, BARE = "forwardpass", "bare inference server"


class NoDeadline:
    """The part of a gRPC call's context ModelInfer reads: a call sent without a deadline."""

    def time_remaining(self) -> None:
        return None


class Bench:
    """Both servers' handlers over the committed model, and the requests they take."""

    def __init__(self, quick: bool) -> None:
        self.calls, self.repeats = CALLS[quick], REPEATS[quick]
        options = ServeOptions(model_repository=ROOT / "models", provider="cpu", auth_token=TOKEN)
        repository = Repository(options.model_repository, options.provider, options.ort_threads)
        repository.load()
        self.plane = DataPlane(repository)
        self.plane.loaded = True
        limits = BodyLimits(options.http_body_timeout, options.http_min_body_rate, options.http_body_budget)
        self.app = RestApp(self.plane, options.max_message_bytes, options.max_concurrent_rpcs, limits, TOKEN)
        self.servicer = InferenceServicer(self.plane, None, options.max_message_bytes)  # batch 1: no thread
        self.bare_app, self.bare_grpc = bare_inference.http_app(MODEL), bare_inference.grpc_infer(MODEL)
        self.bare_runtime = bare_inference.session(MODEL)  # the session each bare handler makes, for its compute
        self.model = self.plane.model("mlp_3_4_1")
        self.body = json_request(request_array(1)).body
        self.headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
        ]
        self.message, self.large = request_bytes(1), request_bytes(LARGE)
        large = binary_request(request_array(LARGE))  # Triton's binary extension both ways, as the serve bench's
        self.large_chunks = [large.body[i : i + BODY_CHUNK] for i in range(0, len(large.body), BODY_CHUNK)]
        self.large_headers = [
            *self.headers[:2],
            *((name.encode(), value.encode()) for name, value in large.headers.items()),
            (b"content-length", str(len(large.body)).encode()),
        ]

    def scope(self, headers: list[tuple[bytes, bytes]] | None = None) -> dict:
        return {"type": "http", "method": "POST", "path": PATH, "raw_path": PATH.encode(), "query_string": b"",
                "headers": headers or self.headers, "scheme": "http"}  # fmt: skip

    def chunks(self) -> Callable:
        """A receive() that hands the large binary body over in BODY_CHUNK pieces, as uvicorn does."""
        pieces = iter(self.large_chunks)
        last = len(self.large_chunks)

        async def receive() -> dict:
            nonlocal last
            last -= 1
            return {"type": "http.request", "body": next(pieces), "more_body": last > 0}

        return receive

    async def receive(self) -> dict:
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise SystemExit(f"the handler answered {message['status']}")

    def timed(self, call: Callable[[], object]) -> float:
        """µs per call: the fastest of the repeats (what this machine's neighbours add is never negative)."""
        runs = []
        for _ in range(self.repeats):
            start = time.perf_counter_ns()
            for _ in range(self.calls):
                call()
            runs.append((time.perf_counter_ns() - start) / self.calls / 1000)
        return min(runs)

    async def read_body(self, receive: Callable, headers: dict[str, str]) -> None:
        """The HTTP app's read of an infer call's body under its limits, its bytes given back to the
        worker's budget after, as _answer gives them back (the budget never fills over the timings)."""
        app, held = self.app, [0]
        await app._body(receive, headers, held, *app._body_limits(RestApp.infer, ("mlp_3_4_1",), headers))
        app.body_bytes -= held[0]

    @staticmethod
    @contextlib.contextmanager
    def compute_left_out():
        """Every session's run answers at once what it answered the first time for that input's shape and
        outputs: what stays of a call is the handlers' own work (the answer's arrays are the same ones)."""
        run, memo = Runtime.run_trusted, {}

        def remembered(runtime: Runtime, x: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
            key = (id(runtime), x.shape, names)
            if key not in memo:
                memo[key] = run(runtime, x, names)
            return memo[key]

        Runtime.run_trusted = remembered
        try:
            yield
        finally:
            Runtime.run_trusted = run

    @staticmethod
    @contextlib.contextmanager
    def clocked(spent: dict[str, int]):
        """STAGES' functions, each adding its ns to spent[row] while the block runs."""
        originals = [(owner, attribute, getattr(owner, attribute)) for _, owner, attribute in STAGES]
        for (row, _, _), (owner, attribute, function) in zip(STAGES, originals):
            if inspect.iscoroutinefunction(function):

                async def clock(*args, _function=function, _row=row, **kwargs):
                    start = time.perf_counter_ns()
                    try:
                        return await _function(*args, **kwargs)
                    finally:
                        spent[_row] += time.perf_counter_ns() - start
            else:

                def clock(*args, _function=function, _row=row, **kwargs):
                    start = time.perf_counter_ns()
                    try:
                        return _function(*args, **kwargs)
                    finally:
                        spent[_row] += time.perf_counter_ns() - start

            setattr(owner, attribute, functools.wraps(function)(clock))
        try:
            yield
        finally:
            for owner, attribute, function in originals:
                setattr(owner, attribute, function)

    async def http_stages(self) -> dict[str, dict[str, dict[str, float]]]:
        """STAGES of forwardpass's batch-1 JSON and 65,536-row binary HTTP calls with compute left out,
        each timed apart and within whole calls (the fastest of the repeats):
        {call: {row: {"apart": µs, "within": µs}}}."""
        large = b"".join(self.large_chunks)
        with self.compute_left_out():
            return {
                "batch 1 JSON": await self.stages_of(self.headers, lambda: self.receive, self.body, 1),
                f"{LARGE:,} rows binary": await self.stages_of(self.large_headers, self.chunks, large, LARGE_SHARE),
            }

    async def stages_of(self, raw: list, fresh: Callable, body: bytes, share: int) -> dict[str, dict[str, float]]:
        """One HTTP call's STAGES, timed apart and within `self.calls // share` whole calls; `fresh()` gives
        the receive() of one call."""
        app, count = self.app, max(1, self.calls // share)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
        split = headers.get(restcodec.HEADER_LENGTH)
        request = restcodec.infer_request("mlp_3_4_1", "", body, split, None, answer_limit=app.max_body)
        answer = self.plane.infer(request)

        apart = {
            "body read under its limits": await self.timed_async(
                lambda: self.read_body(fresh(), headers), large=share > 1
            ),
            "decode": self.timed(
                lambda: restcodec.infer_request("mlp_3_4_1", "", body, split, None, answer_limit=app.max_body)
            ),
            "data plane, all of it": self.timed(lambda: self.plane.infer(request)),
            "encode": self.timed(lambda: restcodec.infer_response(answer, request.parameters, request.outputs)),
        }
        within: dict[str, list[float]] = {row: [] for row, _, _ in STAGES}
        for _ in range(self.repeats):
            spent = dict.fromkeys(within, 0)
            with self.clocked(spent):
                for _ in range(count):
                    await app(self.scope(raw), fresh(), self.send)
            for row, ns in spent.items():
                within[row].append(ns / count / 1000)
        return {row: {"apart": apart[row], "within": min(times)} for row, times in within.items()}

    async def timed_large(self, ours: Callable[[], object], bare: Callable[[], object], name: str) -> dict:
        """Both servers' large call, timed in turn as it is and with compute left out: {server: {row: µs}}."""
        rows = {OURS: {}, BARE: {}}
        rows[OURS][name], rows[BARE][name] = await self.timed_async(ours, bare, large=True)
        with self.compute_left_out():
            rows[OURS][name + WITHOUT_COMPUTE], rows[BARE][name + WITHOUT_COMPUTE] = await self.timed_async(
                ours, bare, large=True
            )
        return rows

    async def timed_async(self, *calls: Callable[[], object], large: bool = False) -> float | tuple[float, ...]:
        """timed() for coroutines; with several calls, each one's fastest, their timings taken in turn
        (this machine's load comes and goes in seconds: each call sees the same moments); a `large`
        call over LARGE_SHARE times fewer calls."""
        count = max(1, self.calls // LARGE_SHARE) if large else self.calls
        runs: list[list[float]] = [[] for _ in calls]
        for _ in range(self.repeats):
            for call, times in zip(calls, runs):
                start = time.perf_counter_ns()
                for _ in range(count):
                    await call()
                times.append((time.perf_counter_ns() - start) / count / 1000)
        fastest = tuple(min(times) for times in runs)
        return fastest[0] if len(calls) == 1 else fastest

    async def http(self) -> dict[str, dict[str, float]]:
        app, plane, model = self.app, self.plane, self.model
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.headers}
        request = restcodec.infer_request("mlp_3_4_1", "", self.body, None, None, answer_limit=app.max_body)
        x, rows, names = validate(request, model)
        answer = plane.infer(request)
        bare_x, _ = bare_inference.http_request(self.body, self.headers, np.float32)
        bare_y = self.bare_runtime.run_trusted(bare_x, self.bare_runtime.output_names)

        def head() -> None:  # what _answer does before the body: headers, Host, token, route
            parsed = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.headers}
            app._check_host(parsed)
            app._authorize(PATH, parsed)
            app._route("POST", PATH)

        whole, bare_whole = await self.timed_async(
            lambda: app(self.scope(), self.receive, self.send),
            lambda: self.bare_app(self.scope(), self.receive, self.send),
        )
        ours = {
            "whole call": whole,
            "headers, Host, token, route": self.timed(head),
            "body read under its limits": await self.timed_async(lambda: self.read_body(self.receive, headers)),
            "decode": self.timed(
                lambda: restcodec.infer_request("mlp_3_4_1", "", self.body, None, None, answer_limit=app.max_body)
            ),
            **self.plane_stages(request, x, rows, names),
            "encode": self.timed(lambda: restcodec.infer_response(answer, request.parameters, request.outputs)),
        }
        bare = {
            "whole call": bare_whole,
            "decode": self.timed(lambda: bare_inference.http_request(self.body, self.headers, np.float32)),
            "compute": self.timed(lambda: self.bare_runtime.run_trusted(bare_x, self.bare_runtime.output_names)),
            "encode": self.timed(lambda: bare_inference.http_answer("mlp_3_4_1", "1", bare_y, False)),
        }
        large = await self.timed_large(
            lambda: app(self.scope(self.large_headers), self.chunks(), self.send),
            lambda: self.bare_app(self.scope(self.large_headers), self.chunks(), self.send),
            f"whole call, {LARGE:,} rows binary in {len(self.large_chunks)} chunks",
        )
        return {OURS: ours | large[OURS], BARE: bare | large[BARE]}

    def plane_stages(self, request, x: np.ndarray, rows: int, names: tuple[str, ...]) -> dict[str, float]:
        """The data plane's stages, the same behind both doors."""
        model, stats = self.model, self.model.stats

        def counted() -> None:  # as a request without dynamic batching is counted: its run with its answer
            stats.record_success(rows, 1, 1, 1, True)

        return {
            "data plane, all of it": self.timed(lambda: self.plane.infer(request)),
            "validate (against the model and the answer limit)": self.timed(lambda: validate(request, model)),
            "compute": self.timed(lambda: model.runtime.run_trusted(x, names)),
            "statistics": self.timed(counted),
        }

    def grpc_calls(self, context: NoDeadline) -> tuple[Callable, Callable]:
        """Each server's ModelInfer from a request's bytes to its answer's, through the deserializer and the
        serializer it is registered with (forwardpass's none: codec.infer_response writes the bytes)."""
        parse, bare_parse = parsing(pb.ModelInferRequest, sized=True), pb.ModelInferRequest.FromString

        async def ours(data: bytes) -> bytes:
            return await self.servicer.ModelInfer(parse(data), context)

        async def bare(data: bytes) -> bytes:
            return (await self.bare_grpc(bare_parse(data), context)).SerializeToString()

        return ours, bare

    async def grpc(self) -> dict[str, dict[str, float]]:
        message = pb.ModelInferRequest.FromString(self.message)
        context = NoDeadline()
        request = codec.infer_request(message, None, self.servicer.max_answer)
        x, rows, names = validate(request, self.model)
        answer = self.plane.infer(request)
        bare_x = np.frombuffer(message.raw_input_contents[0], np.float32).reshape(tuple(message.inputs[0].shape))
        ours_call, bare_call = self.grpc_calls(context)
        for data in (self.message, self.large):  # both answer the same before timing
            y, bare_y = [pb.ModelInferResponse.FromString(await call(data)) for call in (ours_call, bare_call)]
            if not np.array_equal(*(np.frombuffer(a.raw_output_contents[0], np.float32) for a in (y, bare_y))):
                raise SystemExit("forwardpass and the bare handler answer the same request differently")
        whole, bare_whole = await self.timed_async(lambda: ours_call(self.message), lambda: bare_call(self.message))
        ours = {
            "whole call": whole,
            "decode": self.timed(lambda: codec.infer_request(message, None, self.servicer.max_answer)),
            **self.plane_stages(request, x, rows, names),
            "encode": self.timed(lambda: codec.infer_response(answer)),
        }
        bare = {
            "whole call": bare_whole,
            "compute": self.timed(lambda: self.bare_runtime.run_trusted(bare_x, self.bare_runtime.output_names)),
        }
        large = await self.timed_large(
            lambda: ours_call(self.large), lambda: bare_call(self.large), f"whole call, {LARGE:,} rows"
        )
        return {OURS: ours | large[OURS], BARE: bare | large[BARE]}


TEXT = (
    "µs per batch-1 request in each server's handlers, in process (bench/handler_costs.py): forwardpass's HTTP "
    "app with the token on and its gRPC ModelInfer, beside the bare inference server's app and handler, on the "
    "committed 3-4-1 model; and a 65,536-row call of each (over HTTP with the binary extension, its body handed "
    "over in 64 KiB chunks as uvicorn does), timed also with compute left out (each session answering from a memo "
    "what it computed the first time: onnxruntime's 0.2 ms moves by as much as the handlers differ). "
    "Each stage is timed apart (the fastest of {repeats} timings of "
    "{calls:,} calls, a fiftieth as many of 65,536 rows; the two servers' whole calls in turn); "
    "the stages' sum differs from the whole call by the code between them (and over gRPC by parsing: a whole call "
    "parses the request's bytes, each stage takes one parsed message; the gRPC whole calls end with their answer's "
    "bytes). No sockets, no event loop passes: what a served request adds to these is in bench/results/profile.md."
)


def markdown(report: dict) -> str:
    host = report["machine"]
    lines = ["# What a request costs in the handlers", "", TEXT.format(**report), "",
             f"{host['date']}: {host['cpu']}, {host['cores']} cores, Python {host['python']}, "
             f"onnxruntime {host['onnxruntime']}, grpcio {host['grpcio']}."]  # fmt: skip
    for door, title in (
        ("http", "HTTP JSON batch 1 (and 65,536 rows binary)"),
        ("grpc", "gRPC batch 1 (and 65,536 rows)"),
    ):
        ours, bare = report[door][OURS], report[door][BARE]
        extra = ours["whole call"] - bare["whole call"]
        lines += ["", f"## {title}", "", "| stage | forwardpass µs | bare µs |", "|---|---:|---:|"]
        for stage, us in ours.items():
            lines.append(f"| {stage} | {us:.2f} | {f'{bare[stage]:.2f}' if stage in bare else '-'} |")
        lines.append(f"\nforwardpass's whole call takes {extra:.1f} µs more than the bare server's "
                     f"({ours['whole call'] / bare['whole call']:.1f}x).")  # fmt: skip
        for stage in (s for s in ours if s.endswith(WITHOUT_COMPUTE)):
            lines.append(f"With {LARGE:,} rows and compute left out, {ours[stage] - bare[stage]:.1f} µs more "
                         f"({ours[stage] / bare[stage]:.1f}x).")  # fmt: skip
    calls = report["http_stages"]
    lines += ["", "## forwardpass's HTTP stages, timed apart and within whole calls", "",
              "Compute left out. Apart: a stage over and over; within: once per whole call, between the others.",
              "", "| stage | " + " | ".join(f"{call} {how} µs" for call in calls for how in ("apart", "within")) + " |",
              "|---|" + "---:|" * 2 * len(calls)]  # fmt: skip
    for row, _, _ in STAGES:
        cells = (f"{calls[call][row][how]:.2f}" for call in calls for how in ("apart", "within"))
        lines.append(f"| {row} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (CI)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    bench = Bench(args.quick)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the loop both doors run on
        http, grpc = runner.run(bench.http()), runner.run(bench.grpc())
        stages = runner.run(bench.http_stages())
    report = {"machine": machine(), "calls": bench.calls, "repeats": bench.repeats, "http": http, "grpc": grpc,
              "http_stages": stages}  # fmt: skip
    write_results(args.out, "handler-costs", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
