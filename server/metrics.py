"""Prometheus metrics, named and labelled as Triton's are, for the whole server.

They read the counters ModelStatistics reads (server/stats.py: one table in memory every worker
shares, summed over workers on read), so a request is counted once and both agree. A version shows
from the moment a worker serves it until no worker does. Each worker serves /metrics on the same
port as its siblings (SO_REUSEPORT); whichever answers reads the whole table. A scrape is quick, so
a connection that idles METRICS_TIMEOUT seconds is closed, and a worker answers at most
METRICS_THREADS at once: a connection beyond them is closed at once rather than given a thread.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .stats import StatisticsTable, Totals

# (Prometheus name, help, value): the counters Triton exports under the same names, and what they count.
COUNTERS: tuple[tuple[str, str, Callable[[Totals], int]], ...] = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes",
     lambda t: t.success.count),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes", lambda t: t.fail.count),
    ("nv_inference_count", "Number of inferences performed (rows; does not include cached requests)",
     lambda t: t.inference_count),
    ("nv_inference_exec_count", "Number of model executions performed (onnxruntime runs)",
     lambda t: t.execution_count),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds",
     lambda t: t.success.ns // 1000),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds",
     lambda t: t.queue.ns // 1000),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds",
     lambda t: t.compute_input.ns // 1000),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds",
     lambda t: t.compute_infer.ns // 1000),
    ("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds",
     lambda t: t.compute_output.ns // 1000),
)  # fmt: skip

METRICS_TIMEOUT = 10.0  # seconds a metrics connection may stay silent
METRICS_THREADS = 16  # connections a worker's metrics endpoint serves at once


def render(table: StatisticsTable) -> str:
    """The Prometheus text exposition of every version served now, summed over workers."""
    versions = table.versions()
    lines = []
    for name, help_text, value in COUNTERS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        for model, version, totals in versions:
            labels = f'model="{label_value(model)}",version="{label_value(version)}"'
            lines.append(f"{name}{{{labels}}} {value(totals)}")
    return "\n".join(lines) + "\n"


def label_value(text: str) -> str:
    """A label value as the Prometheus text format requires: backslash, double quote and line feed escaped."""
    # backslash first, or the backslashes of the other escapes would be doubled
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def serve_metrics(table: StatisticsTable, host: str, port: int) -> ThreadingHTTPServer:
    """Serve GET /metrics from a daemon thread; the port is shared with the sibling workers."""
    from .hosts import bare, family

    class Handler(BaseHTTPRequestHandler):
        timeout = METRICS_TIMEOUT  # on every read and write of the connection

        def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "metrics are at /metrics")
                return
            body = render(table).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # scrapes every few seconds: not worth a line
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = family(host)

        slots = threading.BoundedSemaphore(METRICS_THREADS)

        def server_bind(self) -> None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            super().server_bind()

        def process_request(self, request, client_address) -> None:
            if not self.slots.acquire(blocking=False):  # every thread busy: no thread for one more
                self.shutdown_request(request)
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                self.slots.release()
                raise

        def process_request_thread(self, request, client_address) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.slots.release()

    server = Server((bare(host), port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
