"""Local inference speed: forwardpass's runtime against NumPy and against a bare InferenceSession.run.

Measures, in one run on one machine:
  * rows/s of Runtime.predict vs a float32 NumPy forward pass of the same network, at several N,
    in both layouts (each against NumPy computing that layout's form); in rows layout also against
    Runtime.predict running the file's own Gemms (columns_inside=False), the path before it;
  * the per-call time at N = 1 of Runtime.predict vs a bare InferenceSession.run on the same file.
Each cell is timed in several repeats; the report gives the median and the spread (min to max) and
the ratios to the baselines, which are what docs/speed.md quotes. Absolute numbers move with the
machine and its load; ratios from one run are the honest comparison.

    python bench/local.py [--model models/mlp_3_4_1/1/model.onnx] [--repeats 7] [--quick] [--update-docs]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
from report import machine, progress

from forwardpass.builder.graph import ExportOptions, build_model, serialize
from forwardpass.builder.readback import read_file
from forwardpass.builder.spec import NetworkSpec
from forwardpass.runtime import LARGE_BATCH, Runtime

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1, 256, 4096, 65536, 1048576)
TARGET_SECONDS = 0.2  # per repeat: long enough to dwarf timer noise, short enough to repeat


def numpy_forward(spec: NetworkSpec, layout: str) -> Callable[[np.ndarray], np.ndarray]:
    """The baseline: the same network in float32 NumPy, in the same layout, weights prepared once.

    rows: z = a W^T + b with a of shape (m, n); columns: Z = W A + b, the slides' form.
    """
    rows = layout == "rows"
    layers = [
        (
            np.ascontiguousarray(W.T if rows else W, dtype=np.float32),
            (b.reshape(-1) if rows else b).astype(np.float32),
            act,
        )
        for W, b, act in zip(spec.weights, spec.biases, spec.activations)
    ]
    g = {
        "relu": lambda z: np.maximum(z, 0, out=z),
        "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
        "tanh": np.tanh,
        "identity": lambda z: z,
    }

    def run(a: np.ndarray) -> np.ndarray:
        for W, b, act in layers:
            z = a @ W if rows else W @ a
            z += b
            a = np.where(z >= 0, z, np.float32(act.alpha) * z) if act.name == "leaky_relu" else g[act.name](z)
        return a

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


def measure(model: Path, repeats: int, sizes: tuple[int, ...]) -> dict:
    """Both layouts' rows/s against NumPy, and the per-call time at N = 1 against bare run()."""
    back = read_file(model)
    spec = back.spec
    layouts = {
        layout: serialize(build_model(spec, ExportOptions(layout, back.dtype, back.opset)))
        for layout in ("rows", "columns")
    }
    steps = 2 * len(sizes) + 1
    step = 0
    rng = np.random.default_rng(0)
    throughput = {}
    for layout, data in layouts.items():
        ours, baseline = Runtime(data, provider="cpu"), numpy_forward(spec, layout)
        classic = Runtime(data, provider="cpu", columns_inside=False) if layout == "rows" else None
        cells = []
        for n in sizes:
            step += 1
            progress(step, steps, f"{layout} N={n:,}: forwardpass and NumPy")
            x = rng.standard_normal((n, spec.sizes[0])).astype(np.float32)
            x = x if layout == "rows" else np.ascontiguousarray(x.T)
            np.testing.assert_allclose(ours.predict(x), baseline(x), rtol=1e-4, atol=1e-5)  # same answers
            reps = repeats if n < 1048576 else max(3, repeats // 2)
            mine, base = (summary(t, n) for t in time_pair(partial(ours.predict, x), partial(baseline, x), reps))
            ratio = mine["rows_per_s_median"] / base["rows_per_s_median"]
            cell = {"n": n, "forwardpass": mine, "numpy": base, "ratio_rows_per_s": ratio}
            if classic is not None:
                again, before = (
                    summary(t, n) for t in time_pair(partial(ours.predict, x), partial(classic.predict, x), reps)
                )
                cell["file_gemms"] = before
                cell["ratio_to_file_gemms"] = again["rows_per_s_median"] / before["rows_per_s_median"]
            cells.append(cell)
        throughput[layout] = cells
    progress(steps, steps, "per call at N=1: forwardpass and bare run()")
    ours = Runtime(model, provider="cpu")
    bare = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x1 = rng.standard_normal((1, spec.sizes[0])).astype(np.float32)
    timings = time_pair(partial(ours.predict, x1), partial(bare.run, None, {back.input_name: x1}), 3 * repeats)
    our_call, bare_call = (summary(t, 1) for t in timings)
    return {
        "model": str(model.relative_to(ROOT) if model.is_relative_to(ROOT) else model),
        "throughput": throughput,
        "per_call_n1": {
            "bare_run": bare_call,
            "forwardpass": our_call,
            "ratio": our_call["seconds_median"] / bare_call["seconds_median"],
        },
    }


def markdown(result: dict) -> str:
    """The report: machine and versions, one rows/s table per layout, the per-call table, the ratios."""
    m = result["machine"]
    lines = [
        "# Local inference benchmark",
        "",
        f"Network of `{result['model']}`; {m['cpu']}, {m['cores']} cores; {m['platform']}; {m['date']}.",
        f"Python {m['python']}, NumPy {m['numpy']}, onnx {m['onnx']}, onnxruntime {m['onnxruntime']}, "
        f"forwardpass {m['forwardpass']}. Both sides use their library's default threads.",
        f"Median of {result['repeats']} repeats (fewer at 1,048,576 rows, 3x as many per call), each side's repeats "
        "interleaved with the other's; spread is min to max. Rerun: `make bench`.",
    ]
    for layout, cells in result["throughput"].items():
        numpy_form = "x @ W.T + b" if layout == "rows" else "W @ X + b"
        lines += [
            "",
            f"## {layout} layout: forwardpass `Runtime.predict` vs NumPy float32 `{numpy_form}`",
            "",
            "| rows N | forwardpass rows/s | spread | NumPy rows/s | spread | ratio |"
            + (" file's own Gemms rows/s | forwardpass / file's Gemms |" if layout == "rows" else ""),
            "|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if layout == "rows" else ""),
        ]
        for cell in cells:
            ours, base, n = cell["forwardpass"], cell["numpy"], cell["n"]
            before = cell.get("file_gemms")
            lines.append(
                f"| {n:,} | {ours['rows_per_s_median']:,.0f} | {_spread(ours, n)} | "
                f"{base['rows_per_s_median']:,.0f} | {_spread(base, n)} | {cell['ratio_rows_per_s']:.2f}x |"
                + (f" {before['rows_per_s_median']:,.0f} | {cell['ratio_to_file_gemms']:.2f}x |" if before else "")
            )
    call = result["per_call_n1"]
    lines += [
        "",
        "## Per call, N = 1, rows layout",
        "",
        "| | median µs | spread µs |",
        "|---|---:|---:|",
    ]
    for label, key in (("bare `InferenceSession.run`", "bare_run"), ("forwardpass `Runtime.predict`", "forwardpass")):
        cell = call[key]
        lines.append(
            f"| {label} | {cell['seconds_median'] * 1e6:.1f} | "
            f"{cell['seconds_min'] * 1e6:.1f}-{cell['seconds_max'] * 1e6:.1f} |"
        )
    lines += ["", "## Against the targets", "", headline(result), ""]
    return "\n".join(lines)


def headline(result: dict) -> str:
    """The ratios docs/speed.md quotes, each beside its target."""
    parts = [
        f"- per call at N = 1, forwardpass / bare `run()`: **{result['per_call_n1']['ratio']:.2f}x** (target <= 1x)"
    ]
    for layout, cells in result["throughput"].items():
        big = ", ".join(f"**{c['ratio_rows_per_s']:.2f}x** at {c['n']:,}" for c in cells if c["n"] >= 65536)
        parts.append(f"- rows/s, {layout} layout, forwardpass / NumPy at N >= 65,536: {big} (target >= 2x)")
    rows = result["throughput"].get("rows", [])
    gained = ", ".join(f"**{c['ratio_to_file_gemms']:.2f}x** at {c['n']:,}" for c in rows if "ratio_to_file_gemms" in c)
    if gained:
        parts.append(
            f"- rows/s, rows layout, forwardpass / the file's own Gemms (columns_inside=False, the path before): "
            f"{gained} (target at N = 1: no worse; below {LARGE_BATCH:,} rows both run the same session)"
        )
    return "\n".join(parts)


def _spread(cell: dict, n: int) -> str:
    return f"{n / cell['seconds_max']:,.0f}-{n / cell['seconds_min']:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/mlp_3_4_1/1/model.onnx")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="2 repeats, N up to 65,536: a smoke run, not a report")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    parser.add_argument("--update-docs", action="store_true", help="put the headline in docs/speed.md")
    args = parser.parse_args()
    sizes = SIZES[:4] if args.quick else SIZES
    repeats = 2 if args.quick else args.repeats
    result = {"machine": machine(), "repeats": repeats, **measure(args.model, repeats, sizes)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "local-quick" if args.quick else "local"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    if args.update_docs:
        from markers import replace_section

        replace_section("local-headline", headline(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
