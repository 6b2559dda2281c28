"""A closed-loop gRPC client: C calls in flight over K connections, the same pre-encoded request each time.

Every server in the benchmark gets the same bytes on the same method, so the client's cost is the
same for all. bench/loadgen.py runs it as a process of its own; bench/soak.py runs it in its own loop.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field

import grpc

METHOD = "/inference.GRPCInferenceService/ModelInfer"
# Every client of the benchmarks sends this token, to every server alike: forwardpass started guarded
# (servers.forwardpass_command's token_file) checks it, the others ignore the header.
TOKEN = "forwardpass-bench-token"
AUTHORIZATION = ("authorization", f"Bearer {TOKEN}")


def channel(url: str, retries: bool = True) -> grpc.aio.Channel:
    """A channel of its own connection, with no message size limit; `retries` off: a failed call is
    counted, not quietly sent again."""
    options = [
        ("grpc.use_local_subchannel_pool", 1),  # one connection per channel, so load spreads over workers
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
        ("grpc.enable_retries", int(retries)),
    ]
    return grpc.aio.insecure_channel(url, options=options)


@dataclass
class Calls:
    """What closed loops of calls saw: the latency of each call sent in the measured span and answered
    before its end, the answers that came after it, and the failed calls sent in it, by status code."""

    latencies_ms: list[float] = field(default_factory=list)
    late: int = 0
    errors: dict[str, int] = field(default_factory=dict)


async def loops(
    calls: list,
    request: bytes,
    concurrency: int,
    measure_from: float,
    stop_at: float,
    timeline: list | None = None,
    start: float = 0.0,
) -> Calls:
    """`concurrency` closed loops over `calls` (the i-th loop on calls[i % len(calls)]), each sending
    `request` until stop_at (time.perf_counter()); with `timeline`, (seconds since start, latency ms,
    status) of every call appended."""
    seen = Calls()

    async def loop(call) -> None:
        while (sent := time.perf_counter()) < stop_at:
            try:
                await call(request, timeout=60, metadata=(AUTHORIZATION,))
            except grpc.RpcError as exc:
                if sent >= measure_from:
                    seen.errors[exc.code().name] = seen.errors.get(exc.code().name, 0) + 1
                if timeline is not None:
                    timeline.append((sent - start, (time.perf_counter() - sent) * 1000, exc.code().name))
                continue
            done = time.perf_counter()
            if timeline is not None:
                timeline.append((sent - start, (done - sent) * 1000, "OK"))
            if sent >= measure_from:
                if done <= stop_at:
                    seen.latencies_ms.append((done - sent) * 1000)
                else:
                    seen.late += 1

    await asyncio.gather(*(loop(calls[i % len(calls)]) for i in range(concurrency)))
    return seen


async def run(
    url: str,
    request: bytes,
    concurrency: int,
    channels: int,
    warmup: float,
    seconds: float,
    timeline: list | None = None,
    retries: bool = True,
) -> dict:
    """Drive the server; with `timeline`, append (seconds since start, latency ms, status) of every call."""
    pool = [channel(url, retries) for _ in range(channels)]
    calls = [each.unary_unary(METHOD) for each in pool]  # bytes in, bytes out: no (de)serializing
    start = time.perf_counter()
    cpu_before = _cpu()
    seen = await loops(calls, request, concurrency, start + warmup, start + warmup + seconds, timeline, start)
    cpu = _cpu() - cpu_before
    for each in pool:
        await each.close()
    answers = len(seen.latencies_ms)
    return {
        "answers": answers,
        "errors": seen.errors,
        "seconds": seconds,
        "latencies_ms": seen.latencies_ms,
        "cpu_s": cpu,
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
