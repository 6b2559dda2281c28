"""One worker process's server: its two front doors, gRPC and HTTP/REST, over one data plane and
one model repository. The lifecycle is grpc's own examples': build, add services, bind, start; on
stop, take no new calls and finish those in flight within a grace period. `workers.py` runs one of
these per worker process.

The server answers live at once and ready only once every model has loaded (a worker joining others
loads first, then binds). On the gRPC door, health (grpc.health.v1, overall and per model) and
reflection (so grpcurl needs no .proto) ride along; the HTTP door has its own health routes (rest.py).

The gRPC door is grpc's asyncio server, on an event loop in a thread of its own: a call whose message
is slow to come, or never comes, waits on the loop and holds no thread, so it cannot keep health or
other callers waiting (with a thread per call being received, 2 such calls froze a worker's gRPC door).
The handler threads (--threads) run what computes or may wait (server/servicer.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from forwardpass.errors import ForwardpassError, Kind
from forwardpass.protos import grpc_service_pb2 as pb

from .config import asks_for_batching
from .control import ModelControl
from .dataplane import DataPlane
from .hosts import address, bare, family
from .httpd import HttpServer, bind
from .memory import keep_freed_memory, kept_bytes
from .metrics import serve_metrics
from .options import BATCHING_THREADS, HANDLER_THREADS, ServeOptions
from .page import Page
from .repository import Repository
from .rest import BodyLimits, RestApp
from .security import GenericOnly, GuardedHealth, server_credentials
from .servicer import InferenceServicer, add_to_server
from .stats import StatisticsTable, table_slots
from .tracing import Tracer

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class Server:
    """One worker's front doors (gRPC and HTTP/REST) over one model repository."""

    def __init__(self, options: ServeOptions, statistics: StatisticsTable | None = None, worker: int = 0) -> None:
        self.options, self.worker = options, worker
        # The workers' shared table, or one of its own for a server run without the supervisor.
        self.statistics = statistics or StatisticsTable(table_slots(options.model_repository), 1)
        keep_freed_memory(*kept_bytes(options.workers))  # large requests reuse freed blocks (server/memory.py)
        self.repository = Repository(
            options.model_repository,
            options.provider,
            options.ort_threads,
            options.skip_bad_models,
            options.columns_inside,
            options.max_model_mb,
        )
        self.control = ModelControl(
            self.repository, options.model_control_mode, options.wanted_file, self._models_changed
        )
        # Here, in the worker, after the fork: the exporter's thread would not survive one (server/tracing.py).
        self.tracer = Tracer(options.trace_otlp, options.trace_rate) if options.trace_otlp else None
        self.plane = DataPlane(self.repository, self.control, options.log_requests, self.tracer is not None)
        self.threads = ThreadPoolExecutor(max_workers=handler_threads(options), thread_name_prefix="rpc")
        self.loop = uvloop.new_event_loop()  # as the HTTP door's; its thread hand-offs measured faster
        self.loop_thread = threading.Thread(target=self.loop.run_forever, name="grpc", daemon=True)
        self.loop_thread.start()
        self.closed = False  # the loop has stopped: nothing more runs on it
        self.grpc, self.health = self._on_loop(self._build())
        self.port = 0
        self.http: HttpServer | None = None

    async def _build(self) -> tuple[grpc.aio.Server, GuardedHealth]:
        """The gRPC server and its services, made on the loop that serves them."""
        options = self.options
        limits = [
            ("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.max_send_message_length", options.max_message_bytes),
        ]
        # After its age (give or take gRPC's 10% jitter) a connection gets GOAWAY: its client opens a new
        # one for new calls, re-resolving a headless Service's pods, while the calls in flight finish on
        # the old one within the grace (unset: however long they take).
        aging = (
            ("grpc.max_connection_age_ms", options.grpc_max_connection_age),
            ("grpc.max_connection_age_grace_ms", options.grpc_max_connection_age_grace),
        )
        server = grpc.aio.server(
            options=limits + [(name, ms) for name, ms in aging if ms],
            maximum_concurrent_rpcs=options.max_concurrent_rpcs,
        )
        behind_token = GenericOnly(server, options.auth_token)
        servicer = InferenceServicer(self.plane, self.threads, options.max_message_bytes, self.tracer)
        add_to_server(servicer, behind_token)
        # Reflection shows the API: it needs the token too. Health answers the overall services to
        # anyone (probes carry no token) and checks it per model itself.
        services = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(services), behind_token
        )
        guarded = GuardedHealth(options.auth_token, open_services=("", SERVICE))
        health_pb2_grpc.add_HealthServicer_to_server(guarded, GenericOnly(server, None))
        return server, guarded

    def _on_loop(self, work: Coroutine):
        """Run a coroutine on the gRPC loop from another thread and return its result (None once closed)."""
        if self.closed:
            work.close()
            return None
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def start(self, join_ready: bool = False) -> int:
        """Bind, start answering, load the models, then say ready; returns the bound gRPC port.

        With join_ready the models load before binding: a worker joining a port that others already
        serve (SO_REUSEPORT) would otherwise take connections and refuse their calls while it loads.
        """
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            if join_ready:
                self.repository.load(self.control.wanted())
            self._bind()
            self._start_http()
            if not join_ready:
                self.repository.load(self.control.wanted())
        except ForwardpassError:
            self.stop(0)
            raise
        self._serve_statistics()
        if self.options.metrics_port:
            serve_metrics(self.statistics, self.options.metrics_host, self.options.metrics_port)
        self.plane.loaded = True
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        if self.options.model_control_mode == "poll":
            self.control.poll(self.options.repository_poll_secs)
        return self.port

    def _bind(self) -> None:
        where = address(self.options.host, self.options.grpc_port)
        credentials = None
        if self.options.tls:
            credentials = server_credentials(self.options.tls_cert, self.options.tls_key, self.options.tls_client_ca)
        try:
            self.port = self._on_loop(self._listen(where, credentials))
        except RuntimeError as exc:
            raise ForwardpassError(f"cannot listen on {where}: {exc}") from None
        if not self.port:
            raise ForwardpassError(f"cannot listen on {where}")

    async def _listen(self, where: str, credentials: grpc.ServerCredentials | None) -> int:
        if credentials is not None:
            port = self.grpc.add_secure_port(where, credentials)
        else:
            port = self.grpc.add_insecure_port(where)
        if port:
            await self.grpc.start()
        return port

    def _start_http(self) -> None:
        if not self.options.http:
            return
        try:
            sock = bind(self.options.host, self.options.http_port)
        except OSError as exc:
            where = address(self.options.host, self.options.http_port)
            raise ForwardpassError(f"cannot listen on {where} (HTTP): {exc.strerror}", Kind.UNAVAILABLE) from None
        page = Page(self.plane, self.options.ort_web_dir, self.options.swagger_ui_dir) if self.options.page else None
        options = self.options
        limits = BodyLimits(options.http_body_timeout, options.http_min_body_rate, options.http_body_budget)
        app = RestApp(
            self.plane, options.max_message_bytes, options.max_concurrent_rpcs, limits, options.auth_token, page,
            options.host, options.allowed_origins, options.allowed_hosts, cors=options.cors_allow_origins,
            tracer=self.tracer,
        )  # fmt: skip
        self.http = HttpServer(app, sock, self.options)
        self.http.start()

    def _models_changed(self) -> None:
        """After a load, unload or rescan: statistics slots for the versions served now, and health per model."""
        self._serve_statistics()
        if self.plane.ready():
            self._set_health(health_pb2.HealthCheckResponse.SERVING)

    def _serve_statistics(self) -> None:
        served = self.repository.models.values()
        versions = {(m.name, str(v)): m.stats for entry in served for v, m in entry.versions.items()}
        self.statistics.serve(self.worker, versions)

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let those in flight finish within `grace` seconds, then close."""
        if self.closed:
            return
        grace = self.options.grace if grace is None else grace
        self.plane.stopping = True
        self._on_loop(self.health.enter_graceful_shutdown())
        stopped = asyncio.run_coroutine_threadsafe(self.grpc.stop(grace), self.loop)  # both doors drain side by side
        if self.http is not None:
            self.http.stop(grace)
        stopped.result()
        self.closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.loop_thread.join()
        self.threads.shutdown(wait=False, cancel_futures=True)  # a call cut off by the grace finishes on its own
        if self.tracer is not None:  # the worker exits without atexit handlers: send what is left now
            self.tracer.stop()

    def banner(self) -> str:
        """One line: address, models and versions, provider."""
        models = []
        providers = set()
        for name, entry in sorted(self.repository.models.items()):
            if entry.ready:
                models.append(f"{name} (version {', '.join(str(v) for v in sorted(entry.versions))})")
                providers.update(m.runtime.provider for m in entry.versions.values())
            else:
                models.append(f"{name} (NOT READY)")
        where = address(self.options.host, self.port) + " (gRPC)"
        page = ""  # the page's URL, for a user to open
        if self.http is not None:
            http = f"{'https' if self.options.tls else 'http'}://{address(self.options.host, self.http.port)}"
            where += f" and {http} (HTTP)"
            page = f"; page: {http}/" if self.options.page else ""
        provider = ", ".join(sorted(providers)) or "none"
        return f"forwardpass serving on {where}: {', '.join(models)}; provider {provider}{page}"

    def _set_health(self, status: int) -> None:
        """Overall and per-model health (from any thread but the loop's)."""
        serving = status == health_pb2.HealthCheckResponse.SERVING
        statuses = {"": status, SERVICE: status}
        for name, entry in self.repository.models.items():
            statuses[name] = (
                health_pb2.HealthCheckResponse.SERVING
                if serving and entry.ready
                else (health_pb2.HealthCheckResponse.NOT_SERVING)
            )
        self._on_loop(self._set_all(statuses))

    async def _set_all(self, statuses: dict[str, int]) -> None:
        for service, status in statuses.items():
            await self.health.set(service, status)


def handler_threads(options: ServeOptions) -> int:
    """--threads, or its default for this repository: more where dynamic batching needs calls side by side."""
    if options.threads:
        return options.threads
    return BATCHING_THREADS if asks_for_batching(options.model_repository) else HANDLER_THREADS


def check_port_free(host: str, port: int, what: str) -> None:
    """Fail clearly if the port is taken. grpcio binds with SO_REUSEPORT, so a second server would
    otherwise share a busy port silently; a plain probe socket without it finds the listener."""
    if port == 0:
        return
    with socket.socket(family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from a last run is no listener
        try:
            probe.bind((bare(host), port))
        except OSError as exc:
            reason = "it is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ForwardpassError(
                f"cannot listen on {address(host, port)} ({what}): {reason}", Kind.UNAVAILABLE
            ) from None
