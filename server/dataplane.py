"""What every request means, whatever door it came through: the data plane under gRPC and HTTP.

Plain values in, plain values out. It owns the model lookup and readiness, checking an inference
request once (server/inference.py), the deadline, the call into the model, timing, statistics, the
one log line per failed request and the access log's line (--log-requests); and it answers health,
metadata, config, statistics, the repository index, load and unload. It imports no transport: a
front door converts its wire format to these calls and maps a ForwardpassError's kind to its own status.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from forwardpass import __version__
from forwardpass.builder.tritonconfig import PLATFORM
from forwardpass.errors import ForwardpassError, Kind
from forwardpass.layout import check_model_name, shown
from forwardpass.protos.model_config_pb2 import ModelConfig

from .control import ModelControl
from .inference import InferRequest, InferResponse, OutputTensor, timeout_ns, validate
from .model import ServedModel, Tensor
from .repository import Repository
from .stats import Totals
from .tracing import TRACE

log = logging.getLogger(__name__)

# Both doors: smaller requests run on the event loop (a thread hop costs more than the call); larger
# ones, and any that may wait in a dynamic batcher, on a thread, so that the loop keeps answering.
INLINE_BYTES = 64 * 1024
# Raw tensor bytes (gRPC's raw_input_contents, HTTP's binary extension) are not parsed, only viewed: 786 KB
# of them (65,536 rows of the 3-4-1 model) compute in about 0.2 ms (bench/results/profile.md), short enough
# to keep the loop, and too short to pay a hop to a thread and back (docs/speed.md, "Where a request's time goes").
INLINE_RAW_BYTES = 2**20


def runs_inline(parsed_bytes: int, raw_bytes: int) -> bool:
    """Whether a request of this many bytes to parse and raw tensor bytes runs on the event loop."""
    return parsed_bytes < INLINE_BYTES and raw_bytes < INLINE_RAW_BYTES


SERVER_NAME = "forwardpass"
# Only what is served: perf_analyzer calls ModelStatistics around every window when it sees "statistics".
EXTENSIONS = ("binary_tensor_data", "model_configuration", "model_repository", "statistics")
# RepositoryModelLoad parameters Triton acts on: a config override and files uploaded with the call.
# Loading what a caller sends would let anyone who reaches the port write the repository.
REFUSED_LOAD_PARAMETERS = ("config", "file:")
LOGGED_CHARS = 256  # a log line carries at most this much of each string (a caller's name, id or path)


@dataclass(frozen=True)
class ModelMetadata:
    """A model's name, loaded versions, platform and tensors."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


@dataclass(frozen=True)
class VersionStatistics:
    """One loaded version's counters, summed over every worker."""

    name: str
    version: str
    stats: Totals


@dataclass(frozen=True)
class IndexEntry:
    """One row of the repository index: a ready version, or a model that is not ready and why."""

    name: str
    version: str
    state: str
    reason: str = ""


def log_event(level: int, event: str, **fields) -> None:
    """One structured line: the event and its fields as JSON, for log pipelines to parse; each string
    cut to LOGGED_CHARS characters (an 8 M-character input name is no 48 MB log line)."""
    fields = {k: shown(v, LOGGED_CHARS, str) if isinstance(v, str) else v for k, v in fields.items()}
    log.log(level, "%s", json.dumps({"event": event, **fields}, sort_keys=True))


@dataclass
class Access:
    """One request's line in the access log (--log-requests), the same from both front doors: the door
    starts it, the data plane adds what only it knows (an inference's id, rows and the version that
    answered), and the door writes it with the status it answers, once the answer is made (before it is sent)."""

    door: str  # "http" or "grpc"
    call: str  # the HTTP method and path, or the RPC
    model: str = ""  # as the call names it
    version: str = ""  # as the call names it; an inference's, the version that answered
    id: str = ""  # an inference's request id
    rows: int | None = None  # an inference's batch, once checked
    # Where tracing puts the request's trace id once it is built (none yet): the line leaves it out while empty.
    trace_id: str = ""
    start_ns: int = field(default_factory=time.monotonic_ns)

    def write(self, status: str) -> None:
        """The line: the door's own status (an HTTP status, a gRPC code) and the microseconds taken."""
        us = (time.monotonic_ns() - self.start_ns) // 1000
        trace = {"trace_id": self.trace_id} if self.trace_id else {}
        log_event(logging.INFO, "request", door=self.door, call=self.call, model=self.model, version=self.version,
                  status=status, rows=self.rows, us=us, id=self.id, **trace)  # fmt: skip


# The access record of the request being answered, while --log-requests is on (None otherwise): its door
# sets it, and hands it on with the request's context to the thread an inference runs on.
ACCESS: ContextVar[Access | None] = ContextVar("access", default=None)


def log_failure(call: str, model: str, exc: ForwardpassError) -> None:
    """The one line per failed request; a front door calls it for errors raised before the data plane."""
    if not getattr(exc, "logged", False):
        exc.logged = True
        log_event(logging.WARNING, "failed", call=call, model=model, kind=exc.kind.name, reason=str(exc))


def _logged(call: str) -> Callable:
    """Log a failed call once, with the model it asked for: its first argument, a model's name or an
    InferRequest."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self, asked: str | InferRequest = "", *args, **kwargs):
            try:
                return method(self, asked, *args, **kwargs)
            except ForwardpassError as exc:
                log_failure(call, asked.model if isinstance(asked, InferRequest) else asked, exc)
                raise

        return wrapper

    return decorate


class DataPlane:
    """The server's answers, over one repository and its model control."""

    def __init__(
        self,
        repository: Repository,
        control: ModelControl | None = None,
        log_requests: bool = False,
        tracing: bool = False,
    ):
        self.repository, self.control, self.log_requests = repository, control, log_requests
        self.tracing = tracing  # --trace-otlp: a traced request's phases are noted (server/tracing.py)
        self.loaded = False  # set once the models have loaded at start-up
        self.stopping = False  # set when the server drains: calls in flight still finish

    # Health and server metadata.
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.loaded and not self.stopping

    def server_metadata(self) -> tuple[str, str, tuple[str, ...]]:
        """Name, version and extensions."""
        return SERVER_NAME, __version__, EXTENSIONS

    @_logged("model_ready")
    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether the version (the latest when empty) is loaded; a name or version no folder could
        have is INVALID_ARGUMENT, as in every other call."""
        try:
            self.repository.get(name, version)
        except ForwardpassError as exc:
            if exc.kind is Kind.BAD_INPUT:
                raise
            return False
        return self.ready()

    # Per model.
    def model(self, name: str, version: str = "") -> ServedModel:
        """The loaded version asked for, once the server has loaded its models."""
        if not self.loaded:
            raise ForwardpassError("the server is not ready: it is loading models", Kind.UNAVAILABLE)
        return self.repository.get(name, version)

    @_logged("model_metadata")
    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        model = self.model(name, version)
        versions = tuple(str(v) for v in sorted(self.repository.entry(name).versions))
        return ModelMetadata(model.name, versions, PLATFORM, (model.input,), model.outputs)

    @_logged("model_config")
    def model_config(self, name: str, version: str = "") -> ModelConfig:
        return self.model(name, version).config

    @_logged("model_statistics")
    def model_statistics(self, name: str = "", version: str = "") -> list[VersionStatistics]:
        """Counters of one version, of a model's loaded versions, or of every model's."""
        models: list[ServedModel] = []
        for each in [name] if name else sorted(self.repository.models):
            entry = self.repository.entry(each)
            if version:
                models.append(self.repository.get(each, version))
            elif entry.ready:
                models.extend(entry.versions[v] for v in sorted(entry.versions))
        return [VersionStatistics(m.name, str(m.version), m.stats.snapshot()) for m in models]

    # Inference.
    def find(self, name: str, version: str = "") -> ServedModel | None:
        """The loaded version a call names, for its front door to decide where the call runs (`waits`)
        and to hand back to `infer`, so that a call looks its model up once; None where it cannot be
        found: the call then fails in `infer`, which says why."""
        try:
            return self.model(name, version)
        except ForwardpassError:
            return None

    def input_bound(self, name: str, version: str = "") -> tuple[int, int] | None:
        """The most rows a request to this model may hold (max_batch_size; 0: no limit) and the values
        in one row, for a front door to refuse a body that cannot be a request before parsing it;
        None for a model that cannot be found (its call fails on its own)."""
        try:
            model = self.model(name, version)
        except ForwardpassError:
            return None
        return model.max_batch_size, math.prod(d for d in model.input.shape if d != -1)

    def infer(self, request: InferRequest, model: ServedModel | None = None) -> InferResponse:
        """Check the request once, run it, and count it; `model` is the version `find` gave for it
        (looked up here when None)."""
        start = time.monotonic_ns()
        access = ACCESS.get() if self.log_requests else None
        if access is not None:
            access.model, access.version, access.id = request.model, request.version, request.id
        trace = TRACE.get() if self.tracing else None
        if trace is not None:
            trace.about(request.model, request.version, request.id)
        # The failure's log line written here, not by _logged's wrapper: one call less on every request.
        try:
            if model is None:
                model = self.model(request.model, request.version)
        except ForwardpassError as exc:
            log_failure("infer", request.model, exc)
            raise
        try:
            x, rows, names = validate(request, model)
            if request.deadline_ns is not None or request.parameters:
                _check_deadline(request, start)
            checked = time.monotonic_ns()
            outputs = model.infer(x, rows, names, trace)
            computed = time.monotonic_ns()
            datatype, dtype = model.input.datatype, model.input_dtype  # the outputs' too
            # Each output as the wire carries it: little-endian and C-contiguous (onnxruntime's already are:
            # no copy then).
            answer = tuple([OutputTensor(n, datatype, np.ascontiguousarray(outputs[n], dtype)) for n in names])
        except Exception as exc:
            model.stats.record_failure(time.monotonic_ns() - start)
            if isinstance(exc, ForwardpassError):
                log_failure("infer", request.model, exc)
            raise
        done = time.monotonic_ns()
        model.stats.record_success(rows, checked - start, computed - checked, done - computed, model.batcher is None)
        if access is not None:
            access.version, access.rows = str(model.version), rows
        if trace is not None:
            trace.about(model.name, model.version, request.id, rows)
            trace.checked(checked, computed)
        return InferResponse(model.name, str(model.version), request.id, answer)

    # The repository.
    def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        rows = []
        for name, entry in sorted(self.repository.models.items()):
            if entry.ready:
                rows += [IndexEntry(name, str(v), "READY") for v in sorted(entry.versions)]
            elif not ready_only:
                rows.append(IndexEntry(name, "", "UNAVAILABLE", entry.reason))
        return rows

    @_logged("load")
    def load(self, name: str, parameters: Mapping[str, object] | None = None) -> None:
        """Load (or reload) a model folder on every worker; explicit mode only."""
        for key in parameters or {}:
            if key.startswith(REFUSED_LOAD_PARAMETERS):
                raise ForwardpassError(
                    f"load parameter '{key}' is not supported: forwardpass loads only what is in its repository"
                )
        self._control().load(check_model_name(name))

    @_logged("unload")
    def unload(self, name: str) -> None:
        """Stop serving a model on every worker; explicit mode only."""
        self._control().unload(check_model_name(name))

    def _control(self) -> ModelControl:
        if self.control is None:
            raise ForwardpassError("this server has no model control", Kind.UNSUPPORTED)
        return self.control


def waits(model: ServedModel | None) -> bool:
    """Whether a call to this model (`DataPlane.find`) may wait for others (dynamic batching): an event
    loop must not run it inline. False for a model that cannot be found: its call fails at once."""
    return model is not None and model.batcher is not None


def _check_deadline(request: InferRequest, start_ns: int) -> None:
    """A request whose deadline (its own, or the `timeout` parameter counted from start_ns, when the
    data plane took it) has passed is not computed."""
    timeout, deadline = timeout_ns(request.parameters), request.deadline_ns
    if timeout is not None:
        deadline = start_ns + timeout if deadline is None else min(deadline, start_ns + timeout)
    if deadline is not None and time.monotonic_ns() >= deadline:
        raise ForwardpassError("the request's deadline passed before it was computed", Kind.DEADLINE)
