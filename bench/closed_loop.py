"""A closed-loop gRPC client: C calls in flight over K connections, the same pre-encoded request each time.

Every server in the benchmark gets the same bytes on the same method, so the client's cost is the
same for all. bench/loadgen.py runs it as a process of its own; bench/soak.py runs it in its own loop.
"""

from __future__ import annotations

import asyncio
import resource
import time

import grpc

METHOD = "/inference.GRPCInferenceService/ModelInfer"
# Every client of the benchmarks sends this token, to every server alike: forwardpass started guarded
# (servers.forwardpass_command's token_file) checks it, the others ignore the header.
TOKEN = "forwardpass-bench-token"
AUTHORIZATION = ("authorization", f"Bearer {TOKEN}")


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
    options = [
        ("grpc.use_local_subchannel_pool", 1),  # one connection per channel, so load spreads over workers
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
        ("grpc.enable_retries", int(retries)),  # off: a failed call is counted, not quietly sent again
    ]
    pool = [grpc.aio.insecure_channel(url, options=options) for _ in range(channels)]
    calls = [channel.unary_unary(METHOD) for channel in pool]  # bytes in, bytes out: no (de)serializing
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    latencies: list[float] = []
    errors: dict[str, int] = {}
    answers = 0

    async def loop(call) -> None:
        nonlocal answers
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                return
            try:
                await call(request, timeout=60, metadata=(AUTHORIZATION,))
            except grpc.RpcError as exc:
                if sent >= measure_from:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                if timeline is not None:
                    timeline.append((sent - start, (time.perf_counter() - sent) * 1000, exc.code().name))
                continue
            done = time.perf_counter()
            if timeline is not None:
                timeline.append((sent - start, (done - sent) * 1000, "OK"))
            if sent >= measure_from and done <= stop_at:
                latencies.append((done - sent) * 1000)
                answers += 1

    cpu_before = _cpu()
    await asyncio.gather(*(loop(calls[i % channels]) for i in range(concurrency)))
    cpu = _cpu() - cpu_before
    for channel in pool:
        await channel.close()
    return {"answers": answers, "errors": errors, "seconds": seconds, "latencies_ms": latencies, "cpu_s": cpu}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
