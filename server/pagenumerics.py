"""What the page asks about a served model version, with no HTTP in it: the network described and
drawn (its W[l] and b[l] included), the same network with every Z[l] and A[l] as outputs (for
onnxruntime-web in the browser), that network again with W[l] and b[l] as inputs (for weights the
page edits), the float64 oracle's Z[l], A[l] for one x or a batch X, for the served weights or
edited ones, with the error bound the project states for the model's dtype
(forwardpass/tolerance.py), so the page never computes either itself, and edited weights as the
.npz `forwardpass build --weights` reads.

Everything here is read from the served version's own file as read back at load time, so the page
sees exactly the network the server answers with.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict

import numpy as np

from forwardpass.builder.graph import ExportOptions, build_model, output_widths, serialize
from forwardpass.builder.npz import npz_bytes
from forwardpass.builder.oracle import forward
from forwardpass.builder.readback import ReadBack
from forwardpass.builder.spec import NetworkSpec
from forwardpass.errors import ForwardpassError, Kind
from forwardpass.show import network_svg
from forwardpass.tolerance import TOLERANCES, layer_bounds

from .dataplane import DataPlane
from .model import ServedModel

MAX_DRAWN_UNITS = 64  # a wider layer is drawn elided; its numbers are still all listed
CACHED_MODELS = 32  # built graphs kept per worker, two a model (small: a few KB to a few MB each)
MAX_EXAMPLES = 4096  # the oracle's batch X: the page's 64 x 64 landscape
# The graphs the page asks for: the options that wrote the served file, changed so.
GRAPHS = {
    "hidden": {"expose_hidden": True},  # every Z[l], A[l] an output
    "editable": {"expose_hidden": True, "weights_as_inputs": True},  # and W[l], b[l] inputs
}


class NetworkViews:
    """The page's three questions about a loaded model version, over the data plane's lookup."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self._built: OrderedDict[tuple[str, int, str], tuple[ServedModel, bytes]] = OrderedDict()
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
            # the stored values as read back, in the slides' shapes: W[l] n_l rows of n_{l-1}, b[l] n_l
            "weights": [{"W": W, "b": np.ascontiguousarray(b[:, 0])} for W, b in zip(spec.weights, spec.biases)],
        }

    def hidden_model(self, name: str, version: str = "") -> bytes:
        """The version's network rebuilt with every Z[l] and A[l] as outputs."""
        return self._graph(name, version, "hidden")

    def editable_model(self, name: str, version: str = "") -> bytes:
        """The hidden-outputs network with W1, b1, ..., WL, bL as inputs, in the slides' shapes: the
        page feeds it the weights it shows, served or edited."""
        return self._graph(name, version, "editable")

    def oracle(self, name: str, version: str, request: dict) -> dict:
        """The float64 oracle's Z[l] and A[l], and each one's error bound at the unit roundoff of the
        model's dtype, for one example "x" (vectors) or a batch "X" of m examples (n_l x m arrays,
        one column per example), with the served weights or the request's "W" and "b"; layer l is
        item l - 1. The bound covers the weights' rounding to the model's dtype, as verify's does."""
        _, back = self._model(name, version)
        spec = _edited(back.spec, request, back.dtype)
        batch = "X" in request
        if batch and "x" in request:
            raise ForwardpassError("send 'x' (one example) or 'X' (a batch of examples), not both")
        X = _batch(request["X"], spec.sizes[0]) if batch else _column(request.get("x"), spec.sizes[0])
        unit = TOLERANCES[back.dtype].unit
        passed = forward(spec, X)
        err_Z, err_A = layer_bounds(spec, X, unit, passed)

        def shown(values: np.ndarray) -> np.ndarray:  # n x m for a batch, a vector for one x
            return values if batch else values[:, 0]

        layers = [
            {"Z": shown(passed.Z[l]), "A": shown(passed.A[l]), "Z_bound": shown(err_Z[l]), "A_bound": shown(err_A[l])}
            for l in range(1, spec.depth + 1)
        ]
        return {"mode": back.dtype, "unit": unit, ("X" if batch else "x"): shown(X), "layers": layers}

    def weights_npz(self, name: str, version: str, request: dict) -> bytes:
        """The request's "W" and "b", checked against the version's shapes, as the .npz that
        `forwardpass build --weights` reads (W1, b1, ... in the slides' shapes, float64)."""
        _, back = self._model(name, version)
        if "W" not in request or "b" not in request:
            raise ForwardpassError("send the weights as 'W' and 'b', one item per layer, as GET .../network lists them")
        return npz_bytes(_edited(back.spec, request, back.dtype))

    def _graph(self, name: str, version: str, kind: str) -> bytes:
        """The version's network rebuilt with the options that wrote it, changed as GRAPHS[kind] says:
        the same bytes for the same file (the builder is deterministic), built once per loaded
        version and kept."""
        model, back = self._model(name, version)
        key = (model.name, model.version, kind)
        with self._lock:
            cached = self._built.get(key)
            if cached is not None and cached[0] is model:  # a reloaded version is another object
                self._built.move_to_end(key)
                return cached[1]
        options = dataclasses.replace(back.options, **GRAPHS[kind])
        data = serialize(build_model(back.spec, options, name=model.name))
        with self._lock:
            self._built[key] = (model, data)
            while len(self._built) > CACHED_MODELS:
                self._built.popitem(last=False)
        return data

    def _model(self, name: str, version: str) -> tuple[ServedModel, ReadBack]:
        model = self.plane.model(name, version)
        if model.network is None:
            raise ForwardpassError(f"model '{name}' was loaded without its network read back", Kind.UNSUPPORTED)
        return model, model.network


def _with_hidden(back: ReadBack) -> ExportOptions:
    """The options that wrote the file, with the hidden outputs exposed."""
    return dataclasses.replace(back.options, **GRAPHS["hidden"])


def _edited(spec: NetworkSpec, request: dict, dtype: str) -> NetworkSpec:
    """The spec with the request's "W" and "b" (both, or neither for the spec's own), each checked
    to be the spec's shape, W[l] n_l rows of n_{l-1} numbers and b[l] n_l numbers, of values the
    model's dtype can hold. Anything else is bad input naming the layer and the shape it needs."""
    if "W" not in request and "b" not in request:
        return spec
    if "W" not in request or "b" not in request:
        raise ForwardpassError("'W' and 'b' go together: send both, or neither for the served weights")
    W, b = request["W"], request["b"]
    for key, value in (("W", W), ("b", b)):
        if not isinstance(value, list) or len(value) != spec.depth:
            raise ForwardpassError(f"'{key}' must be a list of {spec.depth} items, one per layer ({key}[1] first)")
    weights, biases = [], []
    for l in range(1, spec.depth + 1):
        n, before = spec.sizes[l], spec.sizes[l - 1]
        weights.append(_numbers(W[l - 1], (n, before), f"layer {l}: 'W' item {l}", f"W[{l}] is {n} x {before}"))
        biases.append(_numbers(b[l - 1], (n,), f"layer {l}: 'b' item {l}", f"b[{l}] has {n} units").reshape(n, 1))
        largest = np.finfo(dtype).max  # beyond it the model's graph would hold an infinity the oracle has not
        for key, value in (("W", weights[-1]), ("b", biases[-1])):
            if np.abs(value).max() > largest:
                raise ForwardpassError(
                    f"layer {l}: '{key}' item {l} holds a number beyond {dtype}'s range ({largest:.4g})"
                )
    return NetworkSpec(spec.sizes, spec.activations, tuple(weights), tuple(biases))


def _column(x: object, width: int) -> np.ndarray:
    """One example as a (width, 1) float64 column; anything else is bad input, named."""
    return _numbers(x, (width,), "'x'", "one per input unit").reshape(width, 1)


def _batch(X: object, width: int) -> np.ndarray:
    """A list of m examples as the slides' X, (width, m) float64, one column per example."""
    if not isinstance(X, list) or not 1 <= len(X) <= MAX_EXAMPLES:
        raise ForwardpassError(f"'X' must be a list of 1 to {MAX_EXAMPLES} examples, each {width} numbers")
    return np.ascontiguousarray(_numbers(X, (len(X), width), "'X'", "one example per row, one number per input unit").T)


def _numbers(value: object, shape: tuple[int, ...], what: str, why: str) -> np.ndarray:
    """Nested lists of exactly `shape` (as the JSON gave them) as a float64 array; anything else is
    bad input: `what` must be ... (`why`)."""
    rows = f"{shape[0]} row{'s' * (shape[0] != 1)}"
    wanted = f"a list of {shape[0]} numbers" if len(shape) == 1 else f"{rows} of {shape[1]} numbers"
    level = [value]
    for n in shape:
        if not all(isinstance(item, list) and len(item) == n for item in level):
            raise ForwardpassError(f"{what} must be {wanted} ({why})")
        level = [inner for item in level for inner in item]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in level):
        raise ForwardpassError(f"{what} must hold finite numbers only")
    return np.asarray(level, dtype=np.float64).reshape(shape)
