"""What the benchmark reports share: the machine and versions a run was on, a progress bar, percentiles, and
writing a report out."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime

from forwardpass import __version__


def machine() -> dict:
    """The CPU, cores, platform, the versions that decide the speed, and when (UTC)."""
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
        "onnxruntime": onnxruntime.__version__,
        "grpcio": grpc.__version__,
        "forwardpass": __version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def progress(step: int, total: int, label: str) -> None:
    """A bar on stderr, redrawn in place; a new line once the last step starts."""
    width = 30
    done = int(width * step / total)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {step}/{total} {label:<60}")
    sys.stderr.flush()
    if step == total:
        sys.stderr.write("\n")


def errors_cell(errors: dict[str, int]) -> str:
    """A table cell: how many calls failed, and how many with each status when any did."""
    total = sum(errors.values())
    detail = ", ".join(f"{code}: {n}" for code, n in sorted(errors.items()))
    return f"{total} ({detail})" if total else "0"


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile of values, None when there are none."""
    return float(np.percentile(values, q)) if values else None


def write_results(out: Path, name: str, report: dict, text: str) -> None:
    """A bench's raw report as out/NAME.json (kept local) and its summary as out/NAME.md, printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(text)
    print(text)
