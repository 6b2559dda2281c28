"""A small wrapper over onnxruntime.InferenceSession: provider choice, input checks, fast calls.

Two facts shape it. A CPU-only onnxruntime asked for the CUDA provider silently falls back to the
CPU, so the provider that really runs is read back from `get_providers()`. And the CUDA provider
computes Gemm in TF32 unless told otherwise, so exact float32 (`use_tf32=0`) is the default and
TF32 an opt-in.

A third shapes large batches: onnxruntime's CPU Gemm blocks its output columns 16 wide, and a
rows-layout model's output columns are its few units, so on the CPU a rows-layout model also gets a
second session, derived from the read-back spec, that computes in columns layout between two
Transposes (builder.graph.build_columns_inside); batches of LARGE_BATCH rows or more run there.

A fourth shapes loading: a model of millions of weights must load in a few times its size. So its
weights are not prepacked where MLAS's padding of each layer to 16 output units would add much (16
times the size of a 1-unit output layer); the derived session's weights are handed to onnxruntime
as arrays rather than serialized into its graph, and it is checked on a few rows, one at a time,
since the float64 oracle holds several copies of every hidden layer for each row; and a file over
COLUMNS_INSIDE_MAX_BYTES gets no derived session at all (its weights would be held twice, and a
batch of LARGE_BATCH rows through its layers needs gigabytes whichever way it runs).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from functools import partial

import numpy as np
import onnx

from forwardpass.builder.graph import ExportOptions, build_columns_inside, serialize
from forwardpass.builder.readback import ReadBack, read_model

from .dtypes import BY_ONNXRUNTIME, of_numpy
from .errors import ForwardpassError, InputError, Kind, ModelFormatError, ProviderError
from .tolerance import compare

try:
    import onnxruntime as ort
except ImportError:  # neither onnxruntime nor onnxruntime-gpu: said clearly when a session is made
    ort = None

log = logging.getLogger(__name__)

PROVIDERS = ("auto", "cpu", "cuda")
# Below this many rows an IO binding, reused while the batch size holds, saves a fifth of a call;
# above it, copying the output out of the binding costs more than that, and run() hands over
# onnxruntime's own buffer instead (bench/local.py measures both sides).
LARGE_BATCH = 4096
# MLAS prepacks a float32 Gemm's constant B (a rows-layout file's W) in blocks of 16 output units,
# so a layer of n units is held as ceil(n/16)*16 of them: 16 times the size of a 1-unit output layer
# (64 MB for 3-1,000,000-1's). Prepacking, which made 16-row batches of 8-1000-1000-4 a quarter
# faster, stays on while that padding is at most PREPACK_PADDING_MAX bytes, or, where the spec is not
# at hand, while the file is at most PREPACK_MAX_BYTES.
PREPACK_PADDING_MAX = 16 * 2**20
PREPACK_MAX_BYTES = 2 * 2**20
# The largest file that gets a derived columns-inside session: a second copy of its weights and the
# oracle's check (about 70 bytes per hidden unit) stay within a few times the file.
COLUMNS_INSIDE_MAX_BYTES = 8 * 2**20
# Rows the derived columns-inside session is checked on against the oracle, one at a time: each
# row costs the oracle and its error bound about eight float64 copies of every hidden layer.
CHECK_ROWS = 4
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
INSTALL_HINT = (
    "install one of: pip install 'forwardpass[cpu]' (onnxruntime) or pip install 'forwardpass[gpu]' "
    "(onnxruntime-gpu; they cannot share an environment)"
)
CUDA_HINT = (
    "to run on CUDA, replace onnxruntime with onnxruntime-gpu (1.31 is built for CUDA 13 and cuDNN 9): "
    "pip uninstall -y onnxruntime && pip install 'forwardpass[gpu]'"
)


class Runtime:
    """One onnxruntime session on a model, with its input checked before every call."""

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        provider: str = "auto",
        threads: int | None = None,
        tf32: bool = False,
        columns_inside: bool = True,
        read_back: ReadBack | None = None,  # the file read back, where the caller has it: not read twice
    ) -> None:
        if ort is None:
            raise ProviderError(f"onnxruntime is not installed; {INSTALL_HINT}")
        if provider not in PROVIDERS:
            raise ForwardpassError(f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}")
        if threads is not None and threads < 0:
            raise ForwardpassError(f"threads must be 0 (onnxruntime decides) or more, got {threads}")
        self._what = "model" if isinstance(model, bytes) else os.fspath(model)
        size = _size(model)
        self._prepack = _prepacking_fits(read_back, size)
        self.session, self.provider = self._open(model, provider, threads, tf32)
        log.log(logging.INFO if provider == "auto" else logging.DEBUG, "%s runs on %s", self._what, self.provider)
        (inp,) = self.session.get_inputs()
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        if inp.type not in BY_ONNXRUNTIME:
            raise ModelFormatError(
                f"{self._what}: input {inp.name!r} is {inp.type}; forwardpass serves float and double"
            )
        self.dtype = BY_ONNXRUNTIME[inp.type].numpy
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        fixed = [axis for axis, d in enumerate(self.input_shape) if d is not None]
        if len(self.input_shape) != 2 or len(fixed) != 1:
            raise ModelFormatError(
                f"{self._what}: input {inp.name!r} has shape {inp.shape}; expected one batch and one width axis"
            )
        self._width_axis = fixed[0]
        self._width = self.input_shape[self._width_axis]
        self._batch_axis = 1 - self._width_axis
        self._first_output = self.output_names[:1]
        self._inside = None  # the derived columns-layout session that large batches run through
        if columns_inside and self.provider == "cpu" and self._width_axis == 1 and size <= COLUMNS_INSIDE_MAX_BYTES:
            self._inside = self._columns_session(model, threads, read_back)
        self._local = threading.local()  # an IO binding per thread: bindings are not thread-safe

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The model's first output (y or Y) for input x."""
        return self._run(x, self._first_output)[0]

    def run(self, x: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The named outputs (all when None) for input x."""
        names = tuple(self.output_names if outputs is None else outputs)
        unknown = [n for n in names if n not in self.output_names]
        if unknown:
            raise InputError(
                f"unknown output {unknown[0]!r}; the model has {', '.join(self.output_names)}", Kind.NOT_FOUND
            )
        return dict(zip(names, self._run(x, names)))

    def run_trusted(self, x: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The named outputs for x that the caller has already checked: a C-contiguous array of the
        model's dtype and input shape, and names among output_names (the server's data plane does)."""
        return dict(zip(names, self._call(x, names)))

    def check_input(self, x: object) -> np.ndarray:
        """x as a C-contiguous array, or an InputError naming the expected and received shape and dtype."""
        # The common case in as few attribute reads as possible: this runs on every request.
        if (
            type(x) is np.ndarray
            and x.dtype == self.dtype
            and x.ndim == len(self.input_shape)
            and x.shape[self._width_axis] == self._width
            and x.flags.c_contiguous
        ):
            return x
        if not isinstance(x, np.ndarray):
            raise InputError(f"input {self.input_name!r} must be a numpy array, got {type(x).__name__}")
        fits = x.ndim == len(self.input_shape) and all(d is None or d == n for d, n in zip(self.input_shape, x.shape))
        if not fits:
            expected = "(" + ", ".join("batch" if d is None else str(d) for d in self.input_shape) + ")"
            raise InputError(f"input {self.input_name!r} has shape {x.shape}, expected {expected}")
        if x.dtype != self.dtype:
            raise InputError(
                f"input {self.input_name!r} is {x.dtype}, the model takes {self.dtype} (cast with .astype)"
            )
        return np.ascontiguousarray(x)

    def _run(self, x: np.ndarray, names: tuple[str, ...]) -> list[np.ndarray]:
        return self._call(self.check_input(x), names)

    def _call(self, x: np.ndarray, names: tuple[str, ...]) -> list[np.ndarray]:
        if x.shape[self._batch_axis] >= LARGE_BATCH:
            return (self._inside or self.session).run(names, {self.input_name: x})
        local = self._local
        try:
            binding = local.binding
        except AttributeError:
            binding = local.binding = self.session.io_binding()
            local.key = None
        # An output bound once is reused by onnxruntime while its shape holds: rebinding costs a
        # third of a small call, so it happens only when the batch size or the outputs change.
        key = (x.shape[0], x.shape[1], names)
        if local.key != key:
            binding.clear_binding_outputs()
            for name in names:
                binding.bind_output(name)
            local.key = key
        binding.bind_cpu_input(self.input_name, x)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()  # copies: the bound buffers are reused next call

    @property
    def columns_inside(self) -> bool:
        """Whether large batches run through the derived columns-layout session."""
        return self._inside is not None

    def _columns_session(self, model: str | os.PathLike | bytes, threads: int | None, back: ReadBack | None):
        """The rows model's columns-inside equivalent, or None where the file is no Gemm chain that
        reads back with our names, or the equivalent does not answer as the file does."""
        try:
            back = back or _read_back(model)
        except Exception:  # any graph onnxruntime runs may be served; only ours get the fast path
            log.debug("%s: not a Gemm chain forwardpass reads back; no columns-inside session", self._what)
            return None
        options = ExportOptions("rows", back.dtype, back.opset, bool(back.hidden_outputs))
        weights: dict = {}
        derived = build_columns_inside(back.spec, options, partial(_aside, weights))
        names = {o.name for o in derived.graph.output}
        if back.layout != "rows" or derived.graph.input[0].name != self.input_name or names != set(self.output_names):
            return None
        outputs = [o.name for o in derived.graph.output]
        session_options = self._options(threads)
        session_options.add_external_initializers(list(weights), list(weights.values()))
        inside = self._session(serialize(derived), session_options, [CPU])
        del derived
        # A look at both sessions against the oracle within the project's bound and at the file's
        # shapes, so that a read-back the file does not match can never answer: a few rows, one at a time.
        X = np.random.default_rng(0).standard_normal((CHECK_ROWS, self._width)).astype(self.dtype)
        for x in np.split(X, CHECK_ROWS):
            ours, theirs = inside.run(None, {self.input_name: x}), self.session.run(None, {self.input_name: x})
            ys = dict(zip(outputs, ours))[back.output_name], theirs[self.output_names.index(back.output_name)]
            agree = all(compare(back.spec, x.T.astype(np.float64), y.T, back.dtype).ok for y in ys)
            if not agree or [a.shape for a in ours] != [a.shape for a in theirs]:
                log.warning("%s: the columns-inside session disagrees with the file; not used", self._what)
                return None
        self._inside_weights = weights  # onnxruntime reads them where they are: as long as the session lives
        return inside

    def _options(self, threads: int | None):
        options = _session_options(threads)
        if not self._prepack:
            options.add_session_config_entry("session.disable_prepacking", "1")
        return options

    def _open(self, model: str | os.PathLike | bytes, provider: str, threads: int | None, tf32: bool):
        options = self._options(threads)
        offered = ort.get_available_providers()
        if provider == "cuda" and CUDA not in offered:
            raise ProviderError(
                f"{self._what}: the CUDA provider is not in this onnxruntime "
                f"({ort.__version__}: {', '.join(offered)}); {CUDA_HINT}"
            )
        if provider in ("cuda", "auto") and CUDA in offered:
            cuda = (CUDA, {"use_tf32": "1" if tf32 else "0"})
            session = self._session(model, options, [cuda, CPU])
            if CUDA in session.get_providers():
                return session, "cuda"
            if provider == "cuda":
                raise ProviderError(
                    f"{self._what}: onnxruntime offers CUDA but no GPU answered (it fell back to the CPU); {CUDA_HINT}"
                )
            log.info("the CUDA provider did not start; using the CPU")
        return self._session(model, options, [CPU]), "cpu"

    def _session(self, model: str | os.PathLike | bytes, options, providers: list):
        if not isinstance(model, bytes) and not os.path.exists(model):
            raise ModelFormatError(f"{self._what}: no such file", Kind.NOT_FOUND)
        try:
            return ort.InferenceSession(
                model if isinstance(model, bytes) else os.fspath(model), options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own Fail, InvalidGraph, InvalidProtobuf, ...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFormatError(f"{self._what}: onnxruntime cannot load it ({reason})") from None


def _session_options(threads: int | None):
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    if threads != 1:
        # Idle pool threads would spin for work, burning cores that other workers and the gRPC
        # threads need; a small model's calls are too short to gain from spinning.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _prepacking_fits(back: ReadBack | None, size: int) -> bool:
    """Whether prepacking the weights adds at most PREPACK_PADDING_MAX bytes of padding."""
    if back is None:
        return size <= PREPACK_MAX_BYTES
    if back.layout != "rows" or back.dtype != "float32":
        return True  # a columns-layout W is Gemm's A, and a float64 Gemm is not prepacked
    sizes = back.spec.sizes
    return sum((-n % 16) * m * 4 for m, n in zip(sizes, sizes[1:])) <= PREPACK_PADDING_MAX


def _read_back(model: str | os.PathLike | bytes) -> ReadBack:
    return read_model(onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(os.fspath(model)))


def _size(model: str | os.PathLike | bytes) -> int:
    if isinstance(model, bytes):
        return len(model)
    try:
        return os.path.getsize(model)
    except OSError:
        return 0  # a missing file is reported, by name, when the session is made


def _aside(weights: dict, array: np.ndarray, name: str) -> onnx.TensorProto:
    """An initializer declared in the graph, its array kept in `weights` as an OrtValue for
    add_external_initializers: onnxruntime reads the array where it is (1.18 copies it once), where
    weights serialized into the graph would be held three times more while it loads (the graph, its
    bytes, and onnxruntime's parse of them)."""
    array = np.ascontiguousarray(array)
    weights[name] = ort.OrtValue.ortvalue_from_numpy(array)
    declared = onnx.TensorProto(name=name, dims=array.shape, data_type=of_numpy(array.dtype).onnx)
    declared.data_location = onnx.TensorProto.EXTERNAL
    declared.external_data.add(key="location", value="in memory")
    return declared


def cuda_offered() -> bool:
    """Whether the installed onnxruntime has the CUDA provider (a GPU may still be missing)."""
    return ort is not None and CUDA in ort.get_available_providers()
