"""Which opsets each runtime accepts: the 3-4-1 network exported at opset 13, 17 and the newest the
installed onnx knows, run in every runtime, its answer held to the oracle's float32 bound.

    python bench/opset_matrix.py [--update-readme]

Writes bench/results/opset_matrix.md; --update-readme puts the table in the README between its
opset-matrix markers, so the README shows what the script found, not what someone typed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "interop"))

from readme import publish  # noqa: E402

from forwardpass.builder.graph import ExportOptions, build_model, newest_opset, serialize  # noqa: E402
from forwardpass.builder.npz import load_npz  # noqa: E402
from forwardpass.tolerance import compare  # noqa: E402

import runtimes  # noqa: E402


def matrix() -> tuple[list[int], dict[str, dict[int, str]]]:
    spec = load_npz(ROOT / "models" / "mlp_3_4_1" / "1" / "weights.npz")
    opsets = sorted({13, 17, newest_opset()})
    X = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    cells: dict[str, dict[int, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in runtimes.RUNTIMES:
            reason = runtimes.missing(runtime)
            cells[runtime] = {}
            for opset in opsets:
                if reason:
                    cells[runtime][opset] = f"not run: {reason}"
                    continue
                path = Path(tmp) / f"opset{opset}.onnx"
                path.write_bytes(serialize(build_model(spec, ExportOptions(opset=opset))))
                try:
                    out = runtimes.run(runtime, path, X.T)
                    ok = compare(spec, X.astype(np.float64), out.T, "float32").ok
                    cells[runtime][opset] = "ok" if ok else "runs, outside the float32 bound"
                except Exception as exc:  # the runtime's own words, first line
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    cells[runtime][opset] = "fails: ..." + first[-110:] if len(first) > 110 else "fails: " + first
    return opsets, cells


def markdown(opsets: list[int], cells: dict[str, dict[int, str]]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    versions = {
        "onnxruntime": installed("onnxruntime"),
        "reference": f"onnx {installed('onnx')}",
        "openvino": installed("openvino"),
        "tract": installed("tract"),
        "onnxruntime-node": _node_version(),
    }
    head = "| runtime | version | " + " | ".join(f"opset {o}" for o in opsets) + " |"
    lines = [head, "|---|---|" + "---|" * len(opsets)]
    for runtime, row in cells.items():
        lines.append(f"| {runtime} | {versions[runtime]} | " + " | ".join(row[o] for o in opsets) + " |")
    return "\n".join(lines) + "\n"


def openvino_precision() -> str:
    """OpenVINO's max abs error on the 3-4-1 model, without a precision hint and with f32."""
    if runtimes.missing("openvino"):
        return ""
    spec = load_npz(ROOT / "models" / "mlp_3_4_1" / "1" / "weights.npz")
    X = np.random.default_rng(1).standard_normal((3, 4096)).astype(np.float32)
    path = ROOT / "models" / "mlp_3_4_1" / "1" / "model.onnx"
    errors = {
        name: compare(spec, X.astype(np.float64), runtimes.run(name, path, X.T).T, "bf16").max_abs
        for name in ("openvino-bf16", "openvino")
    }
    return (
        f"\nOpenVINO's CPU plugin on this machine, 3-4-1 model, 4,096 rows: max abs error "
        f"{errors['openvino-bf16']:.1e} without a precision hint, {errors['openvino']:.1e} with "
        "INFERENCE_PRECISION_HINT f32.\n"
    )


def _node_version() -> str:
    import json

    package = ROOT / "interop" / "node_modules" / "onnxruntime-node" / "package.json"
    return json.loads(package.read_text())["version"] if package.exists() else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    table = markdown(*matrix()) + openvino_precision()
    publish("opset-matrix", "Opsets each runtime accepts (bench/opset_matrix.py)", table, args.update_readme)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
