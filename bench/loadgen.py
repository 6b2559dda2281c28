"""The closed-loop load generator (bench/closed_loop.py) as a process of its own, one or two per cell.

bench/serve.py starts it so that the client's CPU is counted apart from its own:

    python bench/loadgen.py --url 127.0.0.1:8001 --request req.bin --concurrency 16 --channels 4 \\
        --warmup 1 --seconds 4 --out result.json

It writes the number of answers, errors, latencies (ms) within the measured window and the CPU
seconds this process used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from closed_loop import run


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
