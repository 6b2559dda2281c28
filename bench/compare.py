"""Two revisions' serve bench runs side by side: each cell's median req/s and p99 over its runs, the
ratio after / before, and whether the change is beyond the run-to-run spread.

    python bench/compare.py --before A1/serve.json A2/serve.json A3/serve.json \\
                            --after B1/serve.json B2/serve.json B3/serve.json [--markdown out.md]

How the runs are made: check out each revision in a folder of its own, with a virtualenv of its own
holding that folder's `.[cpu]` (the same dependency versions for both), and run `python bench/serve.py
--no-peers --runs 1 --out DIR` there, taking turns between the two revisions so that a drift of the
machine falls on both alike. A cell is worse beyond the spread when the after median is below every
before run's req/s by more than the before runs' own spread (min to max), and likewise for better."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def cells(paths: list[Path]) -> dict[tuple, list[dict]]:
    """Each cell's results over the runs: (door, server, cell, concurrency) -> one dict per run."""
    found: dict[tuple, list[dict]] = {}
    for path in paths:
        report = json.loads(path.read_text())
        for door, key in (("gRPC", "cells"), ("HTTP", "http_cells")):
            for cell in report.get(key, []):
                name = (door, cell["target"], cell["cell"], cell["concurrency"])
                found.setdefault(name, []).append(cell)
    return found


def verdict(before: list[float], after: list[float]) -> str:
    """'worse' or 'better' when the after median leaves the before runs' range by more than its width."""
    low, high = min(before), max(before)
    spread, median = high - low, statistics.median(after)
    if median < low - spread:
        return "worse"
    if median > high + spread:
        return "better"
    return "within spread"


def compare(before: dict[tuple, list[dict]], after: dict[tuple, list[dict]]) -> list[dict]:
    rows = []
    for name in before.keys() & after.keys():
        b = [c["req_per_s"] for c in before[name]]
        a = [c["req_per_s"] for c in after[name]]
        rows.append({
            "door": name[0], "server": name[1], "cell": name[2], "concurrency": name[3],
            "before_req_per_s": statistics.median(b), "after_req_per_s": statistics.median(a),
            "before_range": (min(b), max(b)), "after_range": (min(a), max(a)),
            "ratio": statistics.median(a) / statistics.median(b),
            "before_p99_ms": statistics.median(c["p99_ms"] for c in before[name]),
            "after_p99_ms": statistics.median(c["p99_ms"] for c in after[name]),
            "verdict": verdict(b, a), "runs": (len(b), len(a)),
        })  # fmt: skip
    return sorted(rows, key=lambda r: (r["door"], r["server"], r["cell"], r["concurrency"]))


def markdown(rows: list[dict]) -> str:
    lines = [
        "| door | server | cell | c | req/s before (runs' range) | req/s after (runs' range) | after / before "
        "| p99 ms before | p99 ms after | |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['door']} | {r['server']} | {r['cell']} | {r['concurrency']} "
            f"| {r['before_req_per_s']:,.0f} ({r['before_range'][0]:,.0f}-{r['before_range'][1]:,.0f}) "
            f"| {r['after_req_per_s']:,.0f} ({r['after_range'][0]:,.0f}-{r['after_range'][1]:,.0f}) "
            f"| {r['ratio']:.2f}x | {r['before_p99_ms']:.2f} | {r['after_p99_ms']:.2f} | {r['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, nargs="+", required=True, help="serve.json of each run before")
    parser.add_argument("--after", type=Path, nargs="+", required=True, help="serve.json of each run after")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    options = parser.parse_args()
    table = markdown(compare(cells(options.before), cells(options.after)))
    print(table, end="")
    if options.markdown:
        options.markdown.write_text(table)


if __name__ == "__main__":
    main()
