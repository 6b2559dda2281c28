"""What the page asks about a served model version, with no HTTP in it: the network described and
drawn, the same network with every Z[l] and A[l] as outputs (for onnxruntime-web in the browser),
and the float64 oracle's Z[l], A[l] for one x with the error bound the project states for the
model's dtype (forwardpass/tolerance.py), so the page never computes either itself.

Everything here is read from the served version's own file as read back at load time, so the page
sees exactly the network the server answers with.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from forwardpass.builder.graph import build_model, output_widths, serialize
from forwardpass.builder.oracle import forward
from forwardpass.builder.readback import ReadBack
from forwardpass.errors import ForwardpassError, Kind
from forwardpass.show import network_svg
from forwardpass.tolerance import TOLERANCES, layer_bounds

from .dataplane import DataPlane
from .model import ServedModel

MAX_DRAWN_UNITS = 64  # a wider layer is drawn elided; its numbers are still all listed
CACHED_MODELS = 16  # models with hidden outputs kept per worker (small: a few KB to a few MB each)


class NetworkViews:
    """The page's three questions about a loaded model version, over the data plane's lookup."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self._hidden: OrderedDict[tuple[str, int], tuple[ServedModel, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self, name: str, version: str = "") -> dict:
        """The network as the page shows it: layers, tensors, tolerance, and the drawing."""
        model, back = self._model(name, version)
        spec = back.spec
        tolerance = TOLERANCES[back.dtype]
        return {
            "name": model.name,
            "version": str(model.version),
            "layout": back.layout,
            "dtype": back.dtype,
            "input": {"name": model.input.name, "datatype": model.input.datatype, "shape": list(model.input.shape)},
            "output": back.output_name,
            "outputs": [o.name for o in model.outputs],
            "sizes": list(spec.sizes),
            "activations": [str(a) for a in spec.activations],
            "hidden_outputs": [n for n, _ in output_widths(spec, _with_hidden(back))],
            "tolerance": {"mode": tolerance.mode, "unit": tolerance.unit, "reason": tolerance.reason},
            "max_drawn_units": MAX_DRAWN_UNITS,
            "svg": network_svg(spec, MAX_DRAWN_UNITS),
        }

    def hidden_model(self, name: str, version: str = "") -> bytes:
        """The version's network rebuilt with every Z[l] and A[l] as outputs: the same bytes for the
        same file (the builder is deterministic), built once per loaded version and kept."""
        model, back = self._model(name, version)
        key = (model.name, model.version)
        with self._lock:
            cached = self._hidden.get(key)
            if cached is not None and cached[0] is model:  # a reloaded version is another object
                self._hidden.move_to_end(key)
                return cached[1]
        data = serialize(build_model(back.spec, _with_hidden(back), name=model.name))
        with self._lock:
            self._hidden[key] = (model, data)
            while len(self._hidden) > CACHED_MODELS:
                self._hidden.popitem(last=False)
        return data

    def oracle(self, name: str, version: str, x: Sequence[float]) -> dict:
        """The float64 oracle's Z[l] and A[l] for one example x, and each one's error bound at the
        unit roundoff of the model's dtype; layer l is item l - 1."""
        _, back = self._model(name, version)
        spec = back.spec
        X = _column(x, spec.sizes[0])
        unit = TOLERANCES[back.dtype].unit
        passed = forward(spec, X)
        err_Z, err_A = layer_bounds(spec, X, unit, passed)
        layers = [
            {
                "Z": passed.Z[l][:, 0].tolist(),
                "A": passed.A[l][:, 0].tolist(),
                "Z_bound": err_Z[l][:, 0].tolist(),
                "A_bound": err_A[l][:, 0].tolist(),
            }
            for l in range(1, spec.depth + 1)
        ]
        return {"mode": back.dtype, "unit": unit, "x": X[:, 0].tolist(), "layers": layers}

    def _model(self, name: str, version: str) -> tuple[ServedModel, ReadBack]:
        model = self.plane.model(name, version)
        if model.network is None:
            raise ForwardpassError(f"model '{name}' was loaded without its network read back", Kind.UNSUPPORTED)
        return model, model.network


def _with_hidden(back: ReadBack):
    """The options that wrote the file, with the hidden outputs exposed."""
    return dataclasses.replace(back.options, expose_hidden=True)


def _column(x: object, width: int) -> np.ndarray:
    """One example as a (width, 1) float64 column; anything else is bad input, named."""
    if not isinstance(x, (list, tuple)) or len(x) != width:
        raise ForwardpassError(f"'x' must be a list of {width} numbers, one per input unit")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in x):
        raise ForwardpassError("'x' must hold finite numbers only")
    return np.asarray(x, dtype=np.float64).reshape(width, 1)
