"""A closed-loop gRPC load generator: C calls in flight over K connections, one pre-encoded request.

Every server in the benchmark gets the same bytes on the same method, so the client's cost is the
same for all. Run as a process of its own (the benchmark starts one or two):

    python bench/loadgen.py --url 127.0.0.1:8001 --request req.bin --concurrency 16 --channels 4 \\
        --warmup 1 --seconds 4 --out result.json

It writes the number of answers, errors, latencies (ms) within the measured window and the CPU
seconds this process used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path

import grpc

METHOD = "/inference.GRPCInferenceService/ModelInfer"


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
                await call(request, timeout=60)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--request", type=Path, required=True, help="a serialized ModelInferRequest")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = asyncio.run(
        run(args.url, args.request.read_bytes(), args.concurrency, args.channels, args.warmup, args.seconds)
    )
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
