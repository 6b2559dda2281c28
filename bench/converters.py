"""One trained network, exported by the converters users know and by forwardpass, side by side.

A scikit-learn MLPClassifier (3 inputs, 4 ReLU units, binary output) is trained here, then
exported with skl2onnx, with torch.onnx.export (legacy and dynamo exporters) from an nn.Sequential
holding the same weights, and with `forwardpass build --from`. For each file: nodes, op types,
size (ours also without its metadata), whether the batch dimension is symbolic, and onnxruntime
rows/s at 65,536 rows (median of repeats, all in this run). Every file's probabilities are checked
against scikit-learn's predict_proba first.

    python bench/converters.py [--update-readme]
"""

from __future__ import annotations

import argparse
import io
import pickle
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from readme import publish  # noqa: E402

ROWS = 65536


def train():
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 3))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MLPClassifier((4,), activation="relu", max_iter=300, random_state=0).fit(X, y)


def export_forwardpass(model) -> dict[str, bytes]:
    from forwardpass.builder.graph import build_model, serialize
    from forwardpass.builder.trained import from_sklearn

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pkl"
        path.write_bytes(pickle.dumps(model))
        proto = build_model(from_sklearn(path))
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    del bare.metadata_props[:]
    bare.graph.doc_string = ""
    return {"forwardpass": serialize(proto), "forwardpass, no metadata or doc string": serialize(bare)}


def export_skl2onnx(model) -> dict[str, bytes]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    proto = convert_sklearn(model, initial_types=[("x", FloatTensorType([None, 3]))], target_opset=17)
    return {"skl2onnx": proto.SerializeToString()}


def export_torch(model) -> dict[str, bytes]:
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        for linear, w, b in zip((net[0], net[2]), model.coefs_, model.intercepts_):
            linear.weight.copy_(torch.from_numpy(w.T))
            linear.bias.copy_(torch.from_numpy(b))
    example = torch.zeros(2, 3)
    files = {}
    buffer = io.BytesIO()
    torch.onnx.export(
        net,
        (example,),
        buffer,
        input_names=["x"],
        output_names=["y"],
        opset_version=17,
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        dynamo=False,
    )
    files["torch.onnx.export (legacy)"] = buffer.getvalue()
    try:
        batch = torch.export.Dim("batch")
        program = torch.onnx.export(
            net,
            (example,),
            input_names=["x"],
            output_names=["y"],
            dynamo=True,
            dynamic_shapes=({0: batch},),
            opset_version=18,
        )
        files["torch.onnx.export (dynamo)"] = program.model_proto.SerializeToString()
    except Exception as exc:  # it needs onnxscript; say why it is missing rather than drop the row
        files["torch.onnx.export (dynamo)"] = f"fails: {str(exc).strip().splitlines()[0][:100]}"
    return files


def describe(name: str, data: bytes | str, model, X: np.ndarray) -> dict:
    if isinstance(data, str):
        return {"exporter": name, "error": data}
    proto = onnx.load_from_string(data)
    ops = Counter(node.op_type for node in proto.graph.node)
    first = proto.graph.input[0].type.tensor_type.shape.dim[0]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: X}
    probabilities = _positive_class(session.run(None, feed), session)
    expected = model.predict_proba(X.astype(np.float64))[:, 1]
    # A sanity check that every file holds the same network, not a tolerance claim: float32 files.
    assert np.allclose(probabilities, expected, rtol=1e-4, atol=1e-5), f"{name} disagrees with predict_proba"
    seconds = []
    session.run(None, feed)
    for _ in range(15):
        start = time.perf_counter()
        session.run(None, feed)
        seconds.append(time.perf_counter() - start)
    return {
        "exporter": name,
        "nodes": len(proto.graph.node),
        "ops": ", ".join(f"{op}" + (f" x{n}" if n > 1 else "") for op, n in sorted(ops.items())),
        "bytes": len(data),
        "symbolic_batch": bool(first.dim_param) or not first.HasField("dim_value"),
        "rows_per_s": ROWS / statistics.median(seconds),
    }


def _positive_class(outputs: list, session) -> np.ndarray:
    """P(class 1) from whatever the exporter answers: one sigmoid column, or skl2onnx's probabilities."""
    names = [o.name for o in session.get_outputs()]
    named = [i for i, name in enumerate(names) if "probab" in name]  # skl2onnx: output_probability
    if named:
        table = outputs[named[0]]
        return np.array([row[1] for row in table]) if isinstance(table, list) else np.asarray(table)[:, 1]
    return np.asarray(outputs[0]).reshape(-1)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| exporter | nodes | op types | bytes | symbolic batch | onnxruntime rows/s at 65,536 |",
        "|---|---:|---|---:|---|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['exporter']} | - | {r['error']} | - | - | - |")
            continue
        lines.append(
            f"| {r['exporter']} | {r['nodes']} | {r['ops']} | {r['bytes']:,} | "
            f"{'yes' if r['symbolic_batch'] else 'no'} | {r['rows_per_s'] / 1e6:.1f} M |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    model = train()
    X = np.random.default_rng(1).standard_normal((ROWS, 3)).astype(np.float32)
    files = {**export_forwardpass(model), **export_skl2onnx(model), **export_torch(model)}
    rows = [describe(name, data, model, X) for name, data in files.items()]
    publish(
        "converters", "One trained network, four exporters (bench/converters.py)", markdown(rows), args.update_readme
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
