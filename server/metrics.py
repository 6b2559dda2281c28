"""Prometheus metrics, named and labelled as Triton's are, summed over every worker.

The supervisor maps one table of counters into shared memory before it forks: a row per worker,
a slot per model version found in the repository. Each worker adds into its own row (a restarted
worker keeps adding to the same row, so counters never go back) and serves /metrics on the same
port as its siblings (SO_REUSEPORT); whichever answers sums the whole table. A scrape is quick, so
a connection that idles METRICS_TIMEOUT seconds is closed, and a worker answers at most
METRICS_THREADS at once: a connection beyond them is closed at once rather than given a thread.
"""

from __future__ import annotations

import mmap
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from forwardpass.layout import model_folders, version_folders

# (Prometheus name, help): the counters Triton exports under the same names, and what they count.
COUNTERS = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes"),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes"),
    ("nv_inference_count", "Number of inferences performed (rows; does not include cached requests)"),
    ("nv_inference_exec_count", "Number of model executions performed (onnxruntime runs)"),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds"),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds"),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds"),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds"),
    ("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds"),
)
INDEX = {name: i for i, (name, _) in enumerate(COUNTERS)}


SPARE_VERSIONS = 8  # slots for versions dropped in after start-up (poll and explicit modes)
METRICS_TIMEOUT = 10.0  # seconds a metrics connection may stay silent
METRICS_THREADS = 16  # connections a worker's metrics endpoint serves at once


def model_versions(repository: Path) -> tuple[list[tuple[str, str]], set[tuple[str, str]]]:
    """The table's slots, found without loading anything: every (model, version) folder, and the
    next SPARE_VERSIONS version numbers of each model; and which of them exist now."""
    slots, present = [], set()
    for folder in model_folders(Path(repository)):
        versions = list(version_folders(folder))
        present |= {(folder.name, str(v)) for v in versions}
        newest = max(versions, default=0)
        slots += [(folder.name, str(v)) for v in versions + list(range(newest + 1, newest + 1 + SPARE_VERSIONS))]
    return slots, present


class SharedCounters:
    """int64 counters [worker, model version, counter] in memory shared by every forked process."""

    def __init__(self, slots: list[tuple[str, str]], workers: int, present: set | None = None) -> None:
        self.slots = {slot: i for i, slot in enumerate(slots)}
        self.present = set(slots) if present is None else present  # shown even before their first call
        shape = (workers, max(len(slots), 1), len(COUNTERS))
        self._memory = mmap.mmap(-1, int(np.prod(shape)) * 8)  # anonymous and shared: survives fork
        self.table = np.frombuffer(self._memory, dtype=np.int64).reshape(shape)

    def row(self, worker: int, model: str, version: str) -> np.ndarray | None:
        """One worker's counters for one model version (None for a version the table has no slot for)."""
        slot = self.slots.get((model, version))
        return None if slot is None else self.table[worker, slot]

    def render(self) -> str:
        """The Prometheus text exposition of the table, summed over workers."""
        totals = self.table.sum(axis=0)
        lines = []
        for i, (name, help_text) in enumerate(COUNTERS):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            for (model, version), slot in self.slots.items():
                if (model, version) not in self.present and not totals[slot].any():
                    continue  # a spare slot no version has used yet
                labels = f'model="{label_value(model)}",version="{label_value(version)}"'
                lines.append(f"{name}{{{labels}}} {int(totals[slot, i])}")
        return "\n".join(lines) + "\n"


def label_value(text: str) -> str:
    """A label value as the Prometheus text format requires: backslash, double quote and line feed escaped."""
    # backslash first, or the backslashes of the other escapes would be doubled
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def serve_metrics(counters: SharedCounters, host: str, port: int) -> ThreadingHTTPServer:
    """Serve GET /metrics from a daemon thread; the port is shared with the sibling workers."""
    from .hosts import bare, family

    class Handler(BaseHTTPRequestHandler):
        timeout = METRICS_TIMEOUT  # on every read and write of the connection

        def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "metrics are at /metrics")
                return
            body = counters.render().encode()
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
