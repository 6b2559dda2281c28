"""The Open Inference Protocol over HTTP/REST (KServe V2, with Triton's extensions) as an ASGI app.

Every route converts (server/restcodec.py), asks the data plane, and converts back; a
ForwardpassError's kind becomes Triton's HTTP status, and the body of every error is
`{"error": "<message>"}` as application/json. Paths are split before their segments are
percent-decoded, so `..%2Fevil` reaches the data plane as the name `../evil`, which it refuses.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np
import orjson

from forwardpass.credentials import BearerToken
from forwardpass.errors import ForwardpassError, Kind
from forwardpass.layout import shown

from . import openapi, restcodec
from .dataplane import ACCESS, INLINE_BYTES, LOGGED_CHARS, Access, DataPlane, log_failure, runs_inline, waits
from .model import ServedModel
from .tracing import TRACE, Trace, Tracer

log = logging.getLogger(__name__)

STATUS = {
    Kind.BAD_INPUT: 400,
    Kind.NOT_FOUND: 404,
    Kind.UNAVAILABLE: 503,
    Kind.TOO_LARGE: 413,
    Kind.DEADLINE: 504,
    Kind.UNSUPPORTED: 501,
}
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")  # probes carry no token
# A browser sends Origin with every cross-origin POST, and a form or text/plain POST needs no
# preflight: without this check any web page could unload a model on a local server, or read its
# weights. Other clients (tritonclient, the KServe SDK, perf_analyzer, curl) send no Origin.
ORIGIN_REFUSAL = "may not load or unload models or read a model's weights here; allow it with --allowed-origins"
CORS_REFUSAL = "may not call this server from a web page; allow it with --cors-allow-origin"
# CORS (--cors-allow-origin): what a page of an allowed origin may send, and read beyond the simple
# headers. Triton's binary extension needs its header both ways: sent with a request, read from an answer.
CORS_SENT = ("authorization", "content-type", "content-encoding", restcodec.HEADER_LENGTH)
CORS_PREFLIGHT = [
    (b"access-control-allow-methods", b"GET, POST"),
    (b"access-control-allow-headers", ", ".join(CORS_SENT).encode()),
    (b"access-control-max-age", b"600"),  # seconds a browser may reuse this answer (Chromium keeps it at most 7,200)
]
CORS_EXPOSED = (b"access-control-expose-headers", restcodec.HEADER_LENGTH.encode())
VARY = (b"vary", b"origin")  # with CORS on, every answer's headers depend on the request's Origin
HOST_REFUSAL = (
    "is not a name of this machine, and this server listens on loopback only: a page renamed to this address "
    "(DNS rebinding) is refused; allow the name with --allowed-hosts"
)
READ_TIMEOUT = 30.0  # seconds a body may pause between chunks before the connection is dropped
# A body must also arrive whole within --http-body-timeout, and, after BODY_GRACE seconds, at an
# average of at least --http-min-body-rate: one byte every few seconds may not hold a slot for long.
BODY_GRACE = 5.0
# A JSON body is refused before it is parsed when it holds more values than a request can: each
# value parsed costs about 64 bytes (a Python float, its list slot, its share of NumPy's copy), so
# 2 M values keep a request's memory near 150 MB, whatever the model allows.
MAX_JSON_VALUES = 2**21
JSON_SLACK = 4096  # values of a request besides its data: names, shapes, parameters, outputs
# The most bytes an input value takes as a client may write it (sign, 17 digits, exponent, comma, space);
# an answer's values, as we write them, take less (restcodec.JSON_ANSWER_VALUE_BYTES).
JSON_INPUT_VALUE_BYTES = 32
INFLATE_SLACK = 64 * 1024  # bytes of an inflated body besides its values
# A request nests five deep (the document, inputs, an input, its data, a row of it): far more is no
# request, refused before orjson builds it (orjson itself stops at 1,024).
MAX_JSON_DEPTH = 32
NOT_STRUCTURE = bytes(c for c in range(256) if c not in b"[]{},")
NESTING = np.zeros(256, np.int8)  # +1 for an opening bracket, -1 for a closing one
NESTING[list(b"[{")], NESTING[list(b"]}")] = 1, -1
SMALL_BODY = 2**20  # bytes of the body of any other call: load parameters, the index's, the oracle's x
JSON = [(b"content-type", b"application/json")]
SEND_CHUNK = 256 * 1024  # bytes of an answer handed to the socket at a time
# Paths and Host headers whose verdict a worker remembers: a client calls the same few, and each verdict
# costs microseconds (percent-decoding and matching the routes; parsing an address) that a small request
# would pay every time. Bounded, as the names are the client's.
REMEMBERED = 1024


class HttpError(Exception):
    """A refusal made by the HTTP layer itself (method, path, size, token), with its status."""

    def __init__(self, status: int, message: str, headers: list | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or []


@dataclass(frozen=True)
class BodyLimits:
    """How long a body may take to arrive, and how many body bytes one worker holds at once."""

    timeout: float  # seconds for the whole body (--http-body-timeout)
    min_rate: float  # bytes per second on average after BODY_GRACE (--http-min-body-rate)
    budget: int  # bytes of bodies in flight per worker (--http-body-budget-mb)


@dataclass
class Call:
    """One HTTP request, as a route sees it."""

    method: str
    segments: tuple[str, ...]
    headers: dict[str, str]
    body: bytes | bytearray


class RestApp:
    """The ASGI application over one data plane."""

    def __init__(
        self,
        plane: DataPlane,
        max_body: int,
        max_in_flight: int,
        limits: BodyLimits,
        token: str | None = None,
        page=None,
        bound: str = "127.0.0.1",
        origins: Collection[str] = (),
        hosts: Collection[str] = (),
        cors: Collection[str] = (),
        tracer: Tracer | None = None,
    ) -> None:
        self.plane, self.max_body, self.max_in_flight = plane, max_body, max_in_flight
        self.tracer = tracer  # --trace-otlp: inferences are traced (server/tracing.py)
        self.limits = limits
        # Body bytes buffered by this worker's calls in flight, against limits.budget.
        self.body_bytes = 0
        self.page = page  # server/page.py's Page: the page at / and its routes, or None (--no-page)
        self.routes = ROUTES + (page.routes if page is not None else [])
        self.origin_checked = ORIGIN_CHECKED | (page.origin_checked if page is not None else frozenset())
        self._token = BearerToken(token) if token is not None else None
        self.cors = frozenset(cors)  # --cors-allow-origin, in lower case: pages that may read answers
        # One allow-list: a page that may read answers may also make the calls the Origin check guards
        # (--allowed-origins alone lets a page's calls through, but its answers stay unreadable to it).
        self.origins = frozenset(origins) | self.cors
        # The Host check guards a loopback address only: bound to 0.0.0.0 or ::, the server answers
        # whatever name a load balancer, an ingress or a kubelet probe uses.
        self.hosts = frozenset(hosts) if loopback_name(bound) else None
        self.in_flight = 0
        self.draining = False  # set on SIGTERM: health still answers (not ready), new calls get 503
        self.openapi: bytes | None = None  # GET /openapi.json's document of self.routes, built on first call
        self._route = functools.lru_cache(maxsize=REMEMBERED)(self._find_route)  # an HttpError is not kept
        self._host_allowed = functools.lru_cache(maxsize=REMEMBERED)(self._host_is_allowed)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        access = self._access(scope) if self.plane.log_requests else None
        trace = self._trace(scope, access) if self.tracer is not None else None
        health = scope["path"] in OPEN_PATHS
        if health:
            # Probes are never counted in flight nor read a body: slow clients filling the worker must
            # not turn live into 503 (a restart loop). A body sent anyway is left unread, and the
            # connection closed after the answer, since its next request would start inside it.
            status, headers, body = await self._answer(scope, receive, counted=False)
            if _has_body(scope["headers"]):
                headers = [*headers, (b"connection", b"close")]
        elif self.draining:
            # Not counted in flight: the drain waits only for calls taken before it began.
            status, headers, body = 503, JSON, _error("the server is stopping: it takes no new calls")
        else:
            self.in_flight += 1
            try:
                status, headers, body = await self._answer(scope, receive)
            finally:
                self.in_flight -= 1
        if self.cors:
            headers = [*headers, *self._cors_headers(scope["headers"])]
        if access is not None:  # once the answer is made, as the gRPC door's: a slow reader's pace is not ours
            access.write(str(status))
        if trace is not None:  # a 5xx is the server's error, by OpenTelemetry's semantic conventions
            trace.end({"http.response.status_code": status}, status >= 500, str(status))
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        # In chunks: uvicorn waits for a slow reader between them, so the socket's buffer holds a
        # chunk or two of a large answer, not all of it, and the answer itself is not copied.
        # The last chunk takes the remainder too: a tail of a few bytes is not a write of its own.
        chunks = len(body) // SEND_CHUNK
        if chunks <= 1:
            await send({"type": "http.response.body", "body": body})
            return
        view = memoryview(body)
        for start in range(0, (chunks - 1) * SEND_CHUNK, SEND_CHUNK):
            await send({"type": "http.response.body", "body": view[start : start + SEND_CHUNK], "more_body": True})
        await send({"type": "http.response.body", "body": view[(chunks - 1) * SEND_CHUNK :]})

    def _access(self, scope) -> Access:
        """The request's access-log record (--log-requests), with the model and version its path names,
        set for the data plane to fill in (each request runs in a task, and so a context, of its own)."""
        method, path = scope["method"], _path(scope)
        access = Access("http", f"{method} {path}")
        if path.startswith("/v2/"):  # every V2 route that captures anything captures a model, then a version
            try:
                arguments = self._route(method, path)[1]
            except HttpError:
                arguments = ()
            access.model, access.version = (*arguments, "", "")[:2]
        ACCESS.set(access)
        return access

    def _trace(self, scope, access: Access | None) -> Trace | None:
        """An inference's trace, when it is to be traced, set for the data plane to fill in."""
        method, path = scope["method"], _path(scope)
        try:
            route, arguments = self._route(method, path)
        except HttpError:
            return None
        if route is not RestApp.infer:
            return None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        template = "/v2/models/{model_name}" + ("/versions/{model_version}" if len(arguments) > 1 else "") + "/infer"
        attributes = {"http.request.method": method, "url.path": path, "http.route": template}  # semantic conventions
        trace = self.tracer.begin(headers, f"{method} {template}", attributes, access)
        TRACE.set(trace)
        return trace

    async def _answer(self, scope, receive, counted: bool = True) -> tuple[int, list, bytes]:
        path = _path(scope)
        held = [0]  # body bytes this call holds against the worker's budget, given back below
        try:
            if counted and self.in_flight > self.max_in_flight:
                raise HttpError(503, f"more than {self.max_in_flight} requests in flight on this worker; retry")
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            self._check_host(headers)
            if scope["method"] == "OPTIONS" and "access-control-request-method" in headers and "origin" in headers:
                return self._preflight(headers["origin"])  # a browser sends no token with a preflight
            self._authorize(path, headers)
            route, arguments = self._route(scope["method"], path)
            if route in self.origin_checked:
                self._check_origin(scope, headers)
            try:
                body = (
                    await self._body(receive, headers, held, *self._body_limits(route, arguments, headers))
                    if counted
                    else b""
                )
            except HttpError as exc:
                # After a 413 or a 503 uvicorn reads and drops the rest of the body, and the client,
                # still sending, gets its answer; a client too slow for 408 is not waited for.
                if exc.status == 408:
                    exc.headers.append((b"connection", b"close"))
                raise
            call = Call(scope["method"], arguments, headers, body)
            del body  # the call holds the body alone: a route may let go of it once parsed
            return await route(self, call)
        except HttpError as exc:
            return exc.status, [*JSON, *exc.headers], _error(str(exc))
        except ForwardpassError as exc:
            log_failure(f"{scope['method']} {path}", "", exc)  # a body the codec could not convert
            return STATUS[exc.kind], JSON, _error(str(exc))
        except Exception as exc:  # a bug: keep serving, say so, log the traceback
            log.exception("%s %s failed", scope["method"], shown(path, LOGGED_CHARS, str))
            return 500, JSON, _error(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.body_bytes -= held[0]

    def needs_token(self, path: str) -> bool:
        """Whether a path asks for the bearer token: all but the probes, the OpenAPI document and the page's files."""
        public = path in OPEN_PATHS or path == openapi.PATH or (self.page is not None and self.page.public(path))
        return self._token is not None and not public

    def _authorize(self, path: str, headers: dict[str, str]) -> None:
        if not self.needs_token(path):
            return
        if not self._token.carried_by(headers.get("authorization", ""), "latin-1"):  # as the header came
            raise HttpError(
                401, "missing or wrong 'Authorization: Bearer <token>' header", [(b"www-authenticate", b"Bearer")]
            )

    def _check_host(self, headers: dict[str, str]) -> None:
        host = headers.get("host")
        if self.hosts is None or host is None or "*" in self.hosts:
            return
        if not self._host_allowed(host):
            raise HttpError(421, f"Host {host!r} {HOST_REFUSAL}")

    def _host_is_allowed(self, host: str) -> bool:
        name = _host_name(host)
        return loopback_name(name) or name.lower() in self.hosts

    def _check_origin(self, scope, headers: dict[str, str]) -> None:
        origin = headers.get("origin")
        if origin is None or "*" in self.origins or origin.lower() in self.origins:
            return
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"  # as the request itself names us
        if origin.lower() != own.lower():  # `Origin: null` (a sandbox, a file:// page) is never our own
            raise HttpError(403, f"Origin {origin!r} {ORIGIN_REFUSAL}")

    def _preflight(self, origin: str) -> tuple[int, list, bytes]:
        """A browser's CORS preflight: what a page of an allowed origin may send (__call__ adds the rest)."""
        if origin.lower() not in self.cors:
            raise HttpError(403, f"Origin {origin!r} {CORS_REFUSAL}")
        return 200, CORS_PREFLIGHT, b""

    def _cors_headers(self, raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Vary on every answer; for a page of an allowed origin, the headers that let it read the answer."""
        origin = next((value for name, value in raw if name.lower() == b"origin"), None)
        if origin is None or origin.decode("latin-1").lower() not in self.cors:
            return [VARY]
        return [(b"access-control-allow-origin", origin), CORS_EXPOSED, VARY]

    def _find_route(self, method: str, path: str) -> tuple[Callable, tuple[str, ...]]:
        """The route of a method and path, with what its pattern captures (self._route remembers it)."""
        try:
            segments = [unquote(s, errors="strict") for s in path.strip("/").split("/")]
        except UnicodeDecodeError:
            raise HttpError(400, f"the path {path} is not percent-encoded UTF-8") from None
        for methods, pattern, handler in self.routes:
            arguments = _match(pattern, segments)
            if arguments is None:
                continue
            if method not in methods:
                allow = ", ".join(methods).encode()
                raise HttpError(
                    405, f"{method} is not allowed on {path}; use {', '.join(methods)}", [(b"allow", allow)]
                )
            return handler, arguments
        raise HttpError(404, f"no such path: {path} (the V2 API is under /v2)")

    def _body_limits(
        self, route: Callable, arguments: tuple[str, ...], headers: dict[str, str]
    ) -> tuple[int, tuple[int, str]]:
        """The most bytes a route's body may take, and may inflate to, with why: an infer call's body
        --max-message-mb, inflated at most to what a request to its model can take (max_batch_size x
        its row as JSON); any other route's (a load, the index, the page's oracle) SMALL_BODY."""
        if route is not RestApp.infer:
            small = min(SMALL_BODY, self.max_body)
            return small, (small, f"the {small} bytes a call to this route may take")
        limit = self.max_body, f"the {self.max_body}-byte limit (--max-message-mb)"
        if "content-encoding" not in headers:
            return self.max_body, limit  # nothing to inflate: spare the model lookup
        bound = self.plane.input_bound(arguments[0], arguments[1] if len(arguments) > 1 else "")
        if bound is None or not bound[0]:
            return self.max_body, limit
        rows, width = bound
        largest = rows * width * JSON_INPUT_VALUE_BYTES + INFLATE_SLACK
        if largest >= self.max_body:
            return self.max_body, limit
        return self.max_body, (
            largest,
            f"{largest} bytes, the most a request to model {shown(arguments[0])} can take "
            f"(max_batch_size {rows} x {width} values x {JSON_INPUT_VALUE_BYTES} bytes in JSON)",
        )

    async def _body(
        self, receive, headers: dict[str, str], held: list[int], limit: int, inflate: tuple[int, str]
    ) -> bytes:
        """The whole body, at most `limit` bytes, decoded (inflated at most to `inflate`'s bytes); every
        byte buffered counts against the worker's budget (held[0] says how many this call holds), and
        the body must come within its deadline and rate."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise HttpError(413, f"the body of {declared} bytes is above the {limit}-byte limit")
        limits, loop = self.limits, asyncio.get_running_loop()
        start = loop.time()
        # The chunks as they come, joined once at the end: the body holds the memory of the bytes it
        # sent, not of the length it announced (eight uploads that announce 60 MB and send 1 MB each
        # hold 8 MB, not 480). The join holds the body twice for a moment, as growing one buffer did
        # each time it moved, and copies it once where the growing buffer copied it chunk after chunk.
        # With the timer below, a 786 KB body in 64 KiB chunks is read in 32 µs instead of 59
        # (bench/handler_costs.py's figure for a whole call holds it).
        chunks, size = [], 0
        # One timer for the whole body, which cancels this task when it fires and the body is overdue:
        # its next chunk, its deadline, or (from BODY_GRACE on) the minimum average rate. Each is only
        # ever later after a chunk, so a timer that fires early is set again for the new moment, and a
        # chunk costs no timer of its own (a timer set and cancelled per chunk, 1.7 µs on uvloop, was
        # a dozen for a 786 KB body). No task per chunk either (asyncio.wait_for's), nor asyncio.timeout's
        # bookkeeping; a body that came with its headers is read without a pass of the event loop.
        task, expired = asyncio.current_task(), []
        cancelling = task.cancelling()  # cancellations asked of this task before the body's timer
        last = start  # when the last chunk came

        def overdue_at() -> float:
            slow_at = start + max(BODY_GRACE, size / limits.min_rate) if limits.min_rate else math.inf
            return min(last + READ_TIMEOUT, start + limits.timeout, slow_at)

        def check() -> None:
            nonlocal timer
            at = overdue_at()
            if loop.time() < at:
                timer = loop.call_at(at, check)
                return
            expired.append(True)
            task.cancel()

        timer = loop.call_at(overdue_at(), check)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise HttpError(400, "the client went away before the body ended")
                last = loop.time()
                chunk = message.get("body", b"")
                self._hold(held, len(chunk))
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise HttpError(413, f"the body is above the {limit}-byte limit")
                if not message.get("more_body", False):
                    break
                if last - start > limits.timeout:
                    raise HttpError(408, self._too_slow(size, last - start))
        except asyncio.CancelledError:
            # The body's timer, unless the server cancelled the task too (a stop): as asyncio.timeout does.
            if not expired or task.uncancel() > cancelling:
                raise
            raise HttpError(408, self._too_slow(size, loop.time() - start)) from None
        finally:
            timer.cancel()
        body = b"".join(chunks)  # one chunk's bytes come back as they are, not copied
        encoding = headers.get("content-encoding", "")
        if encoding.strip().lower() in ("", "identity"):
            return body
        decoded = await asyncio.to_thread(_decoded, body, encoding, *inflate)  # 64 MiB inflated: not on the loop
        self._hold(held, len(decoded))
        return decoded

    def _too_slow(self, size: int, elapsed: float) -> str:
        limits = self.limits
        if elapsed >= limits.timeout:
            return f"the body did not arrive within {limits.timeout:g} s (--http-body-timeout)"
        if elapsed >= BODY_GRACE and size < limits.min_rate * elapsed:
            return (
                f"the body came at {size / elapsed:.0f} bytes/s, below the minimum of {limits.min_rate:.0f} "
                "(--http-min-body-rate)"
            )
        return f"no part of the body came for {READ_TIMEOUT:g} s"

    def _hold(self, held: list[int], size: int) -> None:
        """Count `size` more body bytes against the worker's budget, or refuse with 503 past it."""
        if self.body_bytes + size > self.limits.budget:
            raise HttpError(
                503,
                f"this worker holds {self.body_bytes} bytes of request bodies; {size} more would pass its "
                f"budget of {self.limits.budget} (--http-body-budget-mb); retry",
                [(b"retry-after", b"1")],
            )
        self.body_bytes += size
        held[0] += size

    # Routes: each converts, asks the data plane, converts back.
    async def live(self, call: Call):
        return 200, JSON, _json({"live": self.plane.live()})

    async def ready(self, call: Call):
        ready = self.plane.ready()
        return (200 if ready else 503), JSON, _json({"ready": ready})

    async def server_metadata(self, call: Call):
        name, version, extensions = self.plane.server_metadata()
        return 200, JSON, _json({"name": name, "version": version, "extensions": list(extensions)})

    async def model_metadata(self, call: Call):
        return 200, JSON, _json(restcodec.model_metadata(self.plane.model_metadata(*_model(call))))

    async def model_ready(self, call: Call):
        name, version = _model(call)
        ready = self.plane.model_ready(name, version)
        return (200 if ready else 503), JSON, _json({"name": name, "ready": ready})

    async def model_config(self, call: Call):
        return 200, JSON, _json(restcodec.model_config(self.plane.model_config(*_model(call))))

    async def model_statistics(self, call: Call):
        name, version = _model(call) if call.segments else ("", "")
        return 200, JSON, _json(restcodec.model_statistics(self.plane.model_statistics(name, version)))

    async def infer(self, call: Call):
        name, version = _model(call)
        size, header = len(call.body), call.headers.get(restcodec.HEADER_LENGTH)
        parsed = size if header is None else restcodec.json_length(header, size)  # the JSON before the binary data
        model = self.plane.find(name, version)
        if runs_inline(parsed, size - parsed) and not waits(model):
            return self._infer(call, name, version, parsed, model)
        # A large body is checked, parsed, run and written on a thread: the loop keeps answering. The
        # thread runs in this request's context, where the data plane finds its access record.
        return await asyncio.to_thread(self._infer, call, name, version, parsed, model)

    def _infer(self, call: Call, name: str, version: str, json_bytes: int, model: ServedModel | None):
        trace = TRACE.get() if self.tracer is not None else None
        if trace is not None:
            trace.decoding()
        header = call.headers.get(restcodec.HEADER_LENGTH)
        self._check_values(call.body, json_bytes, name, version)
        raw_input = self.plane.model_metadata(name, version).inputs[0] if header == "0" else None
        request = restcodec.infer_request(name, version, call.body, header, raw_input, answer_limit=self.max_body)
        if header is None:
            call.body = b""  # parsed into arrays: a large body's bytes are freed before it is computed
        answer = self.plane.infer(request, model)
        body, split = restcodec.infer_response(answer, request.parameters, request.outputs)
        if trace is not None:
            trace.encoded()
        if split is None:
            return 200, JSON, body
        return (
            200,
            [(b"content-type", b"application/octet-stream"), (b"inference-header-content-length", str(split).encode())],
            body,
        )

    def _check_values(self, body: bytes, json_bytes: int, name: str, version: str) -> None:
        """Refuse a JSON body with more values than a request to the model can hold, or nested deeper
        than a request is, before parsing it: every value but the first of a list or object follows
        a comma, and every list and object counts, empty ones too (`[],[],...` holds no number and
        would cost a gigabyte parsed). Brackets within strings count too: a valid request's are few.
        `json_bytes` is the JSON before any binary data (restcodec.json_length): 0 for a raw body."""
        if json_bytes < INLINE_BYTES:
            return  # too small to hold more than a few MB parsed (a binary body's JSON is its head alone)
        text = body if json_bytes == len(body) else body[:json_bytes]
        marks = text.translate(None, NOT_STRUCTURE)  # commas and brackets only: 40 MB of JSON in 20 ms
        values = len(marks) - marks.count(b"]") - marks.count(b"}")
        limit, why = MAX_JSON_VALUES, f"the most a JSON request may hold ({MAX_JSON_VALUES})"
        bound = self.plane.input_bound(name, version)
        if bound is not None and bound[0] and bound[0] * (bound[1] + 1) + JSON_SLACK < limit:
            rows, width = bound
            limit = rows * (width + 1) + JSON_SLACK
            why = f"{limit}, the most a request to model {shown(name)} holds (max_batch_size {rows} x {width} values)"
        if values > limit:
            raise HttpError(413, f"the JSON body holds up to {values} values, above {why}; send binary data")
        depth = int(np.cumsum(NESTING[np.frombuffer(marks, np.uint8)], dtype=np.int32).max(initial=0))
        if depth > MAX_JSON_DEPTH:
            raise HttpError(
                400,
                f"the request body nests arrays or objects {depth} levels deep; a request nests "
                f"{MAX_JSON_DEPTH} at most",
            )

    async def repository_index(self, call: Call):
        ready = bool(_optional_json(call.body).get("ready", False))
        return 200, JSON, _json(restcodec.repository_index(self.plane.repository_index(ready)))

    async def load(self, call: Call):
        parameters = _optional_json(call.body).get("parameters", {})
        parameters = parameters if isinstance(parameters, dict) else {}
        # A load reads, checks and compiles the model for a second or more: off the event loop, so
        # health and every other call keep answering meanwhile.
        await asyncio.get_running_loop().run_in_executor(None, self.plane.load, call.segments[0], parameters)
        return 200, JSON, b"{}"

    async def unload(self, call: Call):
        await asyncio.get_running_loop().run_in_executor(None, self.plane.unload, call.segments[0])  # waits on a load
        return 200, JSON, b"{}"


def loopback_name(host: str) -> bool:
    """Whether a host name or address (no port) names this machine: 127.0.0.0/8, ::1 (bracketed or
    not), localhost and *.localhost (RFC 6761)."""
    bare = host.lower().rstrip(".")
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    if bare == "localhost" or bare.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """A Host header without its port: `[::1]:8000` -> `[::1]`, `localhost:8000` -> `localhost`."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0]


def _match(pattern: tuple, segments: list[str]) -> tuple[str, ...] | None:
    """The segments a pattern captures (None for '*'), or None when it does not match."""
    if len(pattern) != len(segments):
        return None
    captured = []
    for expected, segment in zip(pattern, segments):
        if expected is None:
            captured.append(segment)
        elif expected != segment:
            return None
    return tuple(captured)


def _model_routes(suffix: tuple, methods: tuple, handler: Callable) -> list:
    return [
        (methods, ("v2", "models", None, *suffix), handler),
        (methods, ("v2", "models", None, "versions", None, *suffix), handler),
    ]


ROUTES = [
    (("GET",), ("v2", "health", "live"), RestApp.live),
    (("GET",), ("v2", "health", "ready"), RestApp.ready),
    (("GET",), ("v2",), RestApp.server_metadata),
    (("GET",), ("v2", "models", "stats"), RestApp.model_statistics),
    (("POST",), ("v2", "repository", "index"), RestApp.repository_index),
    (("POST",), ("v2", "repository", "models", None, "load"), RestApp.load),
    (("POST",), ("v2", "repository", "models", None, "unload"), RestApp.unload),
    *_model_routes(("ready",), ("GET",), RestApp.model_ready),
    *_model_routes(("config",), ("GET",), RestApp.model_config),
    *_model_routes(("stats",), ("GET",), RestApp.model_statistics),
    *_model_routes(("infer",), ("POST",), RestApp.infer),
    *_model_routes((), ("GET",), RestApp.model_metadata),
    *openapi.ROUTES,  # the document of these routes
]
ORIGIN_CHECKED = frozenset({RestApp.load, RestApp.unload})  # and the page's routes that hand out W and b


def _path(scope) -> str:
    """The request's path as it came, before percent-decoding, without its query."""
    return scope["raw_path"].decode("latin-1").split("?", 1)[0]


def _model(call: Call) -> tuple[str, str]:
    """The model name and version a path captured."""
    return call.segments[0], (call.segments[1] if len(call.segments) > 1 else "")


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request's raw headers announce a body (a length above 0, or chunks)."""
    for name, value in headers:
        if name.lower() == b"transfer-encoding" or (name.lower() == b"content-length" and value.strip(b" 0")):
            return True
    return False


def _decoded(body: bytes, encoding: str, limit: int, why: str = "") -> bytes:
    """The body after Content-Encoding gzip or deflate, never inflated past the limit (a zip bomb is 413);
    `why` names the limit in the refusal."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise HttpError(415, f"Content-Encoding {encoding!r} is not supported; use gzip or deflate")
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib, by the header
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HttpError(400, f"the {encoding} body cannot be decoded: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise HttpError(413, f"the body inflates above {why or f'the {limit}-byte limit'}")
    if not inflater.eof:
        raise HttpError(400, f"the {encoding} body is cut short: its stream does not end")
    if inflater.unused_data:
        raise HttpError(400, f"the {encoding} body has {len(inflater.unused_data)} bytes after the end of its stream")
    return data


def _optional_json(body: bytes) -> dict:
    if not body.strip():
        return {}
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ForwardpassError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ForwardpassError("the request body must be a JSON object")
    return document


def _json(document) -> bytes:
    return orjson.dumps(document)


def _error(message: str) -> bytes:
    return _json({"error": message})
