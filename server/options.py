"""What `forwardpass serve` takes: one dataclass, its checks, and the command-line flags made from it.

Each option is written once, here: its default, its help and its check. The CLI's flags, their
defaults in --help and the values the server sees all come from these fields, so a default cannot
say one thing in --help and do another.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from forwardpass.credentials import read_token
from forwardpass.errors import InputError
from forwardpass.runtime import PROVIDERS

from .cgroup import available_cpus, memory_limit
from .hosts import address
from .tracing import require as require_tracing

MODES = ("none", "poll", "explicit")  # Triton's --model-control-mode
HANDLER_THREADS = 2  # gRPC handler threads per worker by default (docs/speed.md: contention)
BATCHING_THREADS = 8  # ... when dynamic batching needs calls side by side to merge them
BODY_BUDGET_MB = 256  # HTTP body bytes a worker holds at once by default, in MiB, where no memory limit is lower


def _listed(text: str) -> tuple[str, ...]:
    """A comma-separated flag's items, stripped and in lower case (origins and host names are
    case-insensitive), empty ones left out."""
    return tuple(item.strip().lower() for item in text.split(",") if item.strip())


def _origin(text: str) -> str:
    """One origin of a repeatable flag, stripped and in lower case, as _listed writes each of a list's."""
    return text.strip().lower()


ORIGIN = re.compile(r"https?://[^/?#@\s]+")  # scheme://host[:port], as a browser's Origin header names a page
GRPC_ARG_MAX = 2**31 - 1  # gRPC channel arguments are C ints
TRACE_URL = re.compile(r"https?://[^/?#@\s]+(/\S*)?")  # an OTLP/HTTP endpoint: scheme://host[:port][/path]


def option(default, help: str, flags: tuple[str, ...] = (), **argparse_options) -> object:
    """A field that is also a command-line flag (--name-with-dashes unless `flags` says otherwise)."""
    return field(default=default, metadata={"help": help, "flags": flags, **argparse_options})


@dataclass(frozen=True)
class ServeOptions:
    """The server's options; __post_init__ refuses what cannot work, naming the flag."""

    model_repository: Path = option(Path("models"), "models/<name>/<version>/", type=Path)
    host: str = option("127.0.0.1", "address to listen on")
    grpc_port: int = option(
        8001, "gRPC port (Triton's default); 0 picks a free one", flags=("--grpc-port", "--port"), type=int
    )
    http_port: int = option(8000, "HTTP/REST port (Triton's default); 0 picks a free one", type=int)
    http: bool = option(True, "serve no HTTP/REST, only gRPC", flags=("--no-http",), action="store_false")
    page: bool = option(
        True, "serve the page at / (the network drawn and computed in the browser; it hands out every model's "
        "weights): --no-page turns it off, as the image does, and the last of --page/--no-page wins",
        flags=("--page",), action=argparse.BooleanOptionalAction,
    )  # fmt: skip
    ort_web_dir: Path | None = option(
        None, "folder with onnxruntime-web's wasm backend for the page (default: `make web`'s, "
        "then `forwardpass web-runtime`'s)", type=Path,
    )  # fmt: skip
    swagger_ui_dir: Path | None = option(
        None, "folder with Swagger UI's files for the page at /docs (default: `make web`'s, "
        "then `forwardpass web-runtime`'s)", type=Path,
    )  # fmt: skip
    provider: str = option(
        "auto",
        "execution provider for every model whose config.pbtxt does not ask for one "
        "(instance_group KIND_GPU or KIND_CPU)",
        choices=PROVIDERS,
    )
    grace: float = option(10.0, "seconds calls in flight get to finish on SIGTERM", type=float)
    skip_bad_models: bool = option(
        False, "leave out a model that cannot load (reported not ready) instead of failing start-up"
    )
    max_message_mb: float = option(
        64.0,
        "largest request or answer, in MiB; a larger one is refused (gRPC RESOURCE_EXHAUSTED, HTTP 413)",
        type=float,
    )
    max_model_mb: float = option(
        256.0,
        "largest model file a worker loads, in MiB; a larger one is refused (at start-up, or its load fails); "
        "a worker needs a few times a model's size while it loads it (docs/serving.md)",
        type=float,
    )
    workers: int = option(
        available_cpus(),
        "worker processes sharing the port, each with its own sessions; by default one per CPU of the "
        "cgroup's quota (cpu.max, rounded down), else one per core",
        type=int,
    )
    threads: int = option(
        0,
        "gRPC handler threads per worker, for the calls that compute or wait (the loop answers the rest); "
        f"0: {HANDLER_THREADS} (one in Python while the other is in "
        f"onnxruntime; more only queue for the interpreter lock: docs/speed.md), or {BATCHING_THREADS} when "
        "a model's config.pbtxt asks for dynamic_batching at start-up (a worker merges at most this many calls)",
        type=int,
    )
    ort_threads: int = option(1, "onnxruntime intra-op threads per worker; 0 lets onnxruntime use every core", type=int)
    columns_inside: bool = option(
        True,
        "run rows-layout models' large batches as the model file computes them, not through the derived "
        "columns-layout session (docs/speed.md)",
        flags=("--no-columns-inside",),
        action="store_false",
    )
    max_concurrent_rpcs: int = option(
        256,
        "calls a worker takes at once; beyond it gRPC RESOURCE_EXHAUSTED, HTTP 503, never an unbounded queue",
        type=int,
    )
    model_control_mode: str = option(
        "none",
        "none: models load at start-up only; poll: rescan the repository and load new versions; "
        "explicit: RepositoryModelLoad/Unload decide (Triton's modes)",
        choices=MODES,
    )
    repository_poll_secs: float = option(15.0, "poll mode: seconds between rescans", type=float)
    load_models: tuple[str, ...] = option(
        (), "explicit mode: a model to load at start-up (repeatable; * for all)", flags=("--load-model",),
        action="append", metavar="NAME",
    )  # fmt: skip
    metrics_port: int = option(
        0, "serve Prometheus metrics (Triton's names, summed over workers) on this port; 0: off", type=int
    )
    metrics_host: str = option("127.0.0.1", "address of the metrics endpoint")
    log_requests: bool = option(
        False, "an access log: one structured line per request from either door (door, call, model, version, "
        "status, rows, microseconds, id); a failure gets its own line either way",
    )  # fmt: skip
    trace_otlp: str | None = option(
        None, "trace inferences with OpenTelemetry, sending spans over OTLP/HTTP to this URL (a collector's "
        "traces endpoint, e.g. http://127.0.0.1:4318/v1/traces); needs the extra forwardpass[trace]; off by default",
        metavar="URL",
    )  # fmt: skip
    trace_rate: int = option(
        1, "--trace-otlp: trace every Rth inference of each worker, as Triton counts its rate (1: all); a request "
        "whose traceparent carries the sampled flag is traced whatever the count", type=int, metavar="R",
    )  # fmt: skip
    tls_cert: Path | None = option(None, "PEM certificate chain: serve over TLS (with --tls-key)", type=Path)
    tls_key: Path | None = option(None, "PEM private key of --tls-cert", type=Path)
    tls_client_ca: Path | None = option(
        None, "PEM CA: mutual TLS, clients must show a certificate it signed", type=Path
    )
    auth_token_file: Path | None = option(
        None, "every RPC but overall health must carry 'authorization: Bearer <token in this file>'", type=Path
    )
    allowed_origins: tuple[str, ...] = option(
        (), "HTTP: browser origins (scheme://host[:port], comma-separated; * for any) besides the server's own "
        "that may load or unload models and read a model's weights; other origins get 403 (a request without "
        "Origin, as from any non-browser client, always passes)", type=_listed,
        metavar="ORIGINS",
    )  # fmt: skip
    cors_allow_origins: tuple[str, ...] = option(
        (), "HTTP: a browser origin (scheme://host[:port]; repeatable) whose pages may call the server and read "
        "its answers (CORS): preflights answered without a token, Access-Control-* headers on its answers; it "
        "passes the --allowed-origins check too", flags=("--cors-allow-origin",), action="append", type=_origin,
        metavar="ORIGIN",
    )  # fmt: skip
    allowed_hosts: tuple[str, ...] = option(
        (), "HTTP on a loopback address: Host names (comma-separated; * for any) to answer besides 127.0.0.0/8, "
        "[::1], localhost and *.localhost; other names get 421, as a page renamed to this address would send "
        "(DNS rebinding)", type=_listed, metavar="HOSTS",
    )  # fmt: skip
    http_body_timeout: float = option(
        60.0, "HTTP: seconds a request body may take to arrive whole; later, 408 and the connection closed", type=float
    )
    http_min_body_rate: float = option(
        16384.0, "HTTP: bytes per second a request body must average after its first 5 s, or 408; 0: no minimum",
        type=float,
    )  # fmt: skip
    http_body_budget_mb: float | None = option(
        None, "HTTP: MiB of request bodies (as received and as inflated) one worker holds at once; a request past "
        f"it gets 503 with Retry-After. Default {BODY_BUDGET_MB}, or less under a memory limit (docker --memory, a "
        "pod's limits.memory): a quarter of each worker's share. Never less than twice --max-message-mb, so the "
        "largest request passes",
        type=float,
    )  # fmt: skip
    grpc_max_connection_age: int = option(
        0, "gRPC: milliseconds a connection lives before the server sends GOAWAY (a client then reconnects, and "
        "re-resolves a headless Service's pods), as Triton's flag; 0: forever", type=int, metavar="MS",
    )  # fmt: skip
    grpc_max_connection_age_grace: int = option(
        0, "gRPC: milliseconds the calls in flight on an aged connection get to finish before it is closed; "
        "0: as long as they take", type=int, metavar="MS",
    )  # fmt: skip
    # Not flags: read from auth_token_file once, and set by the supervisor for its workers.
    auth_token: str | None = field(default=None, repr=False)  # never logged
    wanted_file: Path | None = None  # explicit mode: the loaded set every worker follows

    def __post_init__(self) -> None:
        if self.http and self.http_port == self.grpc_port != 0:
            raise InputError(f"--http-port and --grpc-port are both {self.http_port}; give them different ports")
        if self.max_message_mb <= 0 or self.grace < 0:
            raise InputError("--max-message-mb must be positive and --grace not negative")
        if self.max_model_mb <= 0:
            raise InputError(f"--max-model-mb must be positive, got {self.max_model_mb:g}")
        if self.http_body_timeout <= 0 or self.http_min_body_rate < 0 or (self.http_body_budget_mb or 1) <= 0:
            raise InputError(
                "--http-body-timeout and --http-body-budget-mb must be positive, --http-min-body-rate not negative"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InputError("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise InputError("--tls-client-ca needs --tls-cert and --tls-key")
        if min(self.max_concurrent_rpcs, self.workers) < 1:
            raise InputError("--max-concurrent-rpcs and --workers must be at least 1")
        if self.threads < 0:
            raise InputError(f"--threads must be 0 (its default for the repository) or more, got {self.threads}")
        if self.ort_threads < 0:
            raise InputError(f"--ort-threads must be 0 (onnxruntime decides) or more, got {self.ort_threads}")
        if self.repository_poll_secs <= 0:
            raise InputError("--repository-poll-secs must be positive")
        if self.load_models and self.model_control_mode != "explicit":
            raise InputError("--load-model applies to --model-control-mode explicit")
        for flag, port in (
            ("--grpc-port", self.grpc_port),
            ("--http-port", self.http_port),
            ("--metrics-port", self.metrics_port),
        ):
            if not 0 <= port <= 65535:
                raise InputError(f"{flag} {port} is not a TCP port (0 to 65535)")
        for origin in self.allowed_origins:
            if origin != "*" and not ORIGIN.fullmatch(origin):
                raise InputError(f"--allowed-origins: {origin!r} is no origin; write scheme://host[:port], or *")
        for origin in self.cors_allow_origins:
            # No *: every page a browser opens could then read every answer, and (one allow-list) unload models.
            if not ORIGIN.fullmatch(origin):
                raise InputError(f"--cors-allow-origin: {origin!r} is no origin; write scheme://host[:port]")
        for flag, ms in (
            ("--grpc-max-connection-age", self.grpc_max_connection_age),
            ("--grpc-max-connection-age-grace", self.grpc_max_connection_age_grace),
        ):
            if not 0 <= ms <= GRPC_ARG_MAX:
                raise InputError(f"{flag} {ms} is not 0 (off) to {GRPC_ARG_MAX} milliseconds")
        if self.grpc_max_connection_age_grace and not self.grpc_max_connection_age:
            raise InputError("--grpc-max-connection-age-grace applies to --grpc-max-connection-age")
        for host in self.allowed_hosts:
            if not re.fullmatch(r"[^/?#@:\s]+|\[[0-9a-f:.]+\]", host):
                raise InputError(f"--allowed-hosts: {host!r} is no host name; write a name or address without a port")
        if self.trace_rate < 1:
            raise InputError(f"--trace-rate must be 1 (every inference) or more, got {self.trace_rate}")
        if self.trace_rate != 1 and not self.trace_otlp:
            raise InputError("--trace-rate applies to --trace-otlp")
        if self.trace_otlp is not None:
            if not TRACE_URL.fullmatch(self.trace_otlp):
                raise InputError(f"--trace-otlp: {self.trace_otlp!r} is no URL; write http(s)://host[:port]/path")
            require_tracing()  # fails here, before any worker starts, without the extra
        if self.auth_token_file is not None and self.auth_token is None:
            object.__setattr__(self, "auth_token", read_token(self.auth_token_file))

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 2**20)

    @property
    def http_body_budget(self) -> int:
        """Bytes of bodies a worker holds at once: the option, else BODY_BUDGET_MB or a quarter of this
        worker's share of the cgroup's memory limit, whichever is less (the workers' budgets together
        then take at most a quarter of the container: 2 workers in 1 GiB hold 128 MiB each); always
        room for the largest request, as received and inflated."""
        if self.http_body_budget_mb is not None:
            chosen = int(self.http_body_budget_mb * 2**20)
        else:
            limit = memory_limit()
            chosen = (
                BODY_BUDGET_MB * 2**20 if limit is None else min(BODY_BUDGET_MB * 2**20, limit // (4 * self.workers))
            )
        return max(chosen, 2 * self.max_message_bytes)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag per option, with its default and help from the dataclass."""
    for f in fields(ServeOptions):
        if "help" not in f.metadata:
            continue
        extra = {k: v for k, v in f.metadata.items() if k not in ("help", "flags")}
        flags = f.metadata["flags"] or ("--" + f.name.replace("_", "-"),)
        if f.default is False:
            extra["action"] = "store_true"
        elif extra.get("action") == "append":
            extra["default"] = []  # argparse appends to its default: a fresh list, not the tuple
        if "default" not in extra:
            extra["default"] = None if f.default is MISSING else f.default
        parser.add_argument(*flags, dest=f.name, help=f.metadata["help"], **extra)


def from_arguments(args: argparse.Namespace) -> ServeOptions:
    """The options the parsed flags say."""
    values = {f.name: getattr(args, f.name) for f in fields(ServeOptions) if "help" in f.metadata}
    for f in fields(ServeOptions):
        if f.metadata.get("action") == "append":  # repeatable flags: argparse's list, as the dataclass's tuple
            values[f.name] = tuple(values[f.name])
    return ServeOptions(**values)


# A server started with no flags: what the client and the CLI's other commands assume unless told.
DEFAULTS = ServeOptions()
DEFAULT_GRPC_ADDRESS = address(DEFAULTS.host, DEFAULTS.grpc_port)
