"""The runtimes besides onnxruntime that forwardpass's files are checked in, behind one call each.

    run(name, model_path, x) -> the model's first output, as NumPy

Each is optional: `missing(name)` says why one cannot run here (the `interop` extra installs the
Python ones; `npm ci --prefix interop` installs onnxruntime-node). OpenVINO's CPU plugin computes
in bfloat16 on processors that have it unless told otherwise: forwardpass asks for f32.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RUNTIMES = ("onnxruntime", "reference", "openvino", "tract", "onnxruntime-node")
MODES = {"openvino-bf16": "bf16"}  # the tolerance mode when a runtime computes below the model's dtype


def missing(name: str) -> str | None:
    """Why a runtime cannot run here, or None when it can."""
    if name == "onnxruntime-node":
        if shutil.which("node") is None:
            return "node is not installed"
        if not (HERE / "node_modules" / "onnxruntime-node").is_dir():
            return "onnxruntime-node is not installed (npm ci --prefix interop)"
        return None
    module = {"onnxruntime": "onnxruntime", "reference": "onnx.reference", "openvino": "openvino", "tract": "tract"}
    try:
        __import__(module[name.removesuffix("-bf16")])
    except ImportError:
        return f"{name} is not installed (pip install 'forwardpass[interop]')"
    return None


def run(name: str, model: Path, x: np.ndarray) -> np.ndarray:
    """The model's first output for x in the named runtime."""
    return RUNNERS[name](Path(model), np.ascontiguousarray(x))


def _onnxruntime(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _reference(model: Path, x: np.ndarray) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(str(model))
    return evaluator.run(None, {evaluator.input_names[0]: x})[0]


def _openvino(model: Path, x: np.ndarray, precision: str = "f32") -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(str(model), "CPU", {"INFERENCE_PRECISION_HINT": precision})
    return np.asarray(compiled([x])[compiled.output(0)])


def _openvino_default(model: Path, x: np.ndarray) -> np.ndarray:
    """OpenVINO as it runs without a hint: bf16 where the processor has it."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(model), "CPU")
    return np.asarray(compiled([x])[compiled.output(0)])


def _tract(model: Path, x: np.ndarray) -> np.ndarray:
    import tract

    runnable = tract.onnx().load(str(model)).into_model().into_runnable()
    return runnable.run([x])[0].to_numpy()


def _node(model: Path, x: np.ndarray) -> np.ndarray:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"dtype": x.dtype.name, "shape": list(x.shape), "data": x.ravel().tolist()}, f)
    try:
        result = subprocess.run(["node", str(HERE / "run.mjs"), str(model), f.name], capture_output=True, text=True)
    finally:
        Path(f.name).unlink()
    if result.returncode != 0:
        raise RuntimeError(f"onnxruntime-node: {result.stderr.strip()}")
    out = json.loads(result.stdout)
    return np.asarray(out["data"], dtype=x.dtype).reshape(out["dims"])


RUNNERS = {
    "onnxruntime": _onnxruntime,
    "reference": _reference,
    "openvino": _openvino,
    "openvino-bf16": _openvino_default,
    "tract": _tract,
    "onnxruntime-node": _node,
}
