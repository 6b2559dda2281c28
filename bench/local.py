"""Local inference speed: forwardpass's runtime against NumPy and against a bare InferenceSession.run.

Measures, in one run on one machine:
  * rows/s of Runtime.predict vs a float32 NumPy forward pass of the same network, at several N;
  * the per-call time at N = 1 of Runtime.predict vs a bare InferenceSession.run on the same file.
Each cell is timed in several repeats; the report gives the median and the spread (min to max) and
the ratios to the baselines, which are what the README quotes. Absolute numbers move with the
machine and its load; ratios from one run are the honest comparison.

    python bench/local.py [--model models/mlp_3_4_1/1/model.onnx] [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from forwardpass import __version__
from forwardpass.builder.readback import read_file
from forwardpass.builder.spec import NetworkSpec
from forwardpass.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1, 256, 4096, 65536, 1048576)
TARGET_SECONDS = 0.2  # per repeat: long enough to dwarf timer noise, short enough to repeat


def numpy_forward(spec: NetworkSpec) -> Callable[[np.ndarray], np.ndarray]:
    """The baseline: the same network in float32 NumPy, rows layout (x W^T + b), weights prepared once."""
    layers = [
        (W.T.astype(np.float32).copy(), b.reshape(-1).astype(np.float32), a)
        for W, b, a in zip(spec.weights, spec.biases, spec.activations)
    ]
    g = {
        "relu": lambda z: np.maximum(z, 0, out=z),
        "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
        "tanh": np.tanh,
        "identity": lambda z: z,
    }

    def run(x: np.ndarray) -> np.ndarray:
        for Wt, b, act in layers:
            z = x @ Wt
            z += b
            x = np.where(z >= 0, z, np.float32(act.alpha) * z) if act.name == "leaky_relu" else g[act.name](z)
        return x

    return run


def time_pair(first: Callable[[], object], second: Callable[[], object], repeats: int) -> tuple[list, list]:
    """Seconds per call of two functions, one figure per repeat each, the repeats interleaved so
    that a change in the machine's load falls on both alike. Call counts fit TARGET_SECONDS."""
    counts = [_calls_for(fn) for fn in (first, second)]
    results: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for fn, calls, out in zip((first, second), counts, results):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            out.append((time.perf_counter() - start) / calls)
    return results


def _calls_for(fn: Callable[[], object]) -> int:
    fn()  # warm up: first calls allocate
    start = time.perf_counter()
    fn()
    return max(1, int(TARGET_SECONDS / max(time.perf_counter() - start, 1e-7)))


def summary(seconds: list[float], rows: int) -> dict:
    """Median and spread of per-call seconds, and the rows/s they mean."""
    return {
        "seconds_median": statistics.median(seconds),
        "seconds_min": min(seconds),
        "seconds_max": max(seconds),
        "rows_per_s_median": rows / statistics.median(seconds),
        "repeats": len(seconds),
    }


def progress(step: int, total: int, label: str) -> None:
    width = 30
    done = int(width * step / total)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {step}/{total} {label:<40}")
    sys.stderr.flush()
    if step == total:
        sys.stderr.write("\n")


def measure(model: Path, repeats: int, sizes: tuple[int, ...]) -> dict:
    spec = read_file(model).spec
    ours = Runtime(model, provider="cpu")
    bare = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    baseline = numpy_forward(spec)
    rng = np.random.default_rng(0)
    steps = len(sizes) + 1
    rows = []
    for step, n in enumerate(sizes, 1):
        progress(step, steps, f"rows/s at N={n:,}: forwardpass and NumPy")
        x = rng.standard_normal((n, spec.sizes[0])).astype(np.float32)
        reps = repeats if n < 1048576 else max(3, repeats // 2)
        np.testing.assert_allclose(ours.predict(x), baseline(x), rtol=1e-4, atol=1e-5)  # same network, same answer
        timings = time_pair(lambda x=x: ours.predict(x), lambda x=x: baseline(x), reps)
        mine, base = (summary(t, n) for t in timings)
        rows.append(
            {
                "n": n,
                "forwardpass": mine,
                "numpy": base,
                "ratio_rows_per_s": mine["rows_per_s_median"] / base["rows_per_s_median"],
            }
        )
    progress(steps, steps, "per call at N=1: forwardpass and bare run()")
    x1 = rng.standard_normal((1, spec.sizes[0])).astype(np.float32)
    our_call, bare_call = (
        summary(t, 1) for t in time_pair(lambda: ours.predict(x1), lambda: bare.run(["y"], {"x": x1}), 3 * repeats)
    )
    return {
        "model": str(model.relative_to(ROOT) if model.is_relative_to(ROOT) else model),
        "throughput": rows,
        "per_call_n1": {
            "bare_run": bare_call,
            "forwardpass": our_call,
            "ratio": our_call["seconds_median"] / bare_call["seconds_median"],
        },
    }


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "forwardpass": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Local inference benchmark",
        "",
        f"Model `{result['model']}`; {m['cpu']}, {m['cores']} cores; {m['platform']}; {m['date']}.",
        f"Python {m['python']}, NumPy {m['numpy']}, onnx {m['onnx']}, onnxruntime {m['onnxruntime']}, "
        f"forwardpass {m['forwardpass']}. Both sides use their library's default threads.",
        f"Median of {result['repeats']} repeats (fewer at 1,048,576 rows, 3x as many per call), each side's repeats "
        "interleaved with the other's; spread is min to max. Rerun: `make bench`.",
        "",
        "| rows N | forwardpass rows/s | spread | NumPy float32 rows/s | spread | ratio |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["throughput"]:
        ours, base = row["forwardpass"], row["numpy"]
        lines.append(
            f"| {row['n']:,} | {ours['rows_per_s_median']:,.0f} | {_spread(ours, row['n'])} | "
            f"{base['rows_per_s_median']:,.0f} | {_spread(base, row['n'])} | {row['ratio_rows_per_s']:.2f}x |"
        )
    call = result["per_call_n1"]
    lines += [
        "",
        "| per call, N = 1 | median µs | spread µs |",
        "|---|---:|---:|",
        f"| bare `InferenceSession.run` | {call['bare_run']['seconds_median'] * 1e6:.1f} | "
        f"{call['bare_run']['seconds_min'] * 1e6:.1f}-{call['bare_run']['seconds_max'] * 1e6:.1f} |",
        f"| forwardpass `Runtime.predict` (checks + IO binding) | {call['forwardpass']['seconds_median'] * 1e6:.1f} | "
        f"{call['forwardpass']['seconds_min'] * 1e6:.1f}-{call['forwardpass']['seconds_max'] * 1e6:.1f} |",
        "",
        f"forwardpass per call / bare run(): **{call['ratio']:.2f}x** (target: at most 1.0x). ",
        "Rows/s at N >= 65,536, forwardpass / NumPy: "
        + ", ".join(f"**{r['ratio_rows_per_s']:.2f}x** at {r['n']:,}" for r in result["throughput"] if r["n"] >= 65536)
        + " (target: at least 2x).",
        "",
    ]
    return "\n".join(lines)


def _spread(cell: dict, n: int) -> str:
    return f"{n / cell['seconds_max']:,.0f}-{n / cell['seconds_min']:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/mlp_3_4_1/1/model.onnx")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="2 repeats, N up to 65,536: a smoke run, not a report")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    sizes = SIZES[:4] if args.quick else SIZES
    repeats = 2 if args.quick else args.repeats
    result = {"machine": machine(), "repeats": repeats, **measure(args.model, repeats, sizes)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "local-quick" if args.quick else "local"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
