"""Per model version counters, as Triton's ModelStatistics reports them (perf_analyzer reads them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .metrics import INDEX

# The durations of Triton's InferStatistics that we count, in its field order (both doors write them).
DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class Duration:
    """A count of events and their cumulative nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class Statistics:
    """Counters of one model version; every update holds the lock, so threads may share it."""

    inference_count: int = 0  # rows computed
    execution_count: int = 0  # onnxruntime runs
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    shared: np.ndarray | None = field(default=None, repr=False)  # this worker's Prometheus row, if any
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_success(self, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One request answered: its rows, and the time spent decoding, computing (queue included)
        and encoding."""
        with self._lock:
            self.inference_count += rows
            self.last_inference_ms = time.time_ns() // 1_000_000
            self.success.add(input_ns + infer_ns + output_ns)
            self.compute_input.add(input_ns)
            self.compute_infer.add(infer_ns)
            self.compute_output.add(output_ns)
            if self.shared is not None:
                row, us = self.shared, 1000
                row[INDEX["nv_inference_request_success"]] += 1
                row[INDEX["nv_inference_count"]] += rows
                row[INDEX["nv_inference_request_duration_us"]] += (input_ns + infer_ns + output_ns) // us
                row[INDEX["nv_inference_compute_input_duration_us"]] += input_ns // us
                row[INDEX["nv_inference_compute_infer_duration_us"]] += infer_ns // us
                row[INDEX["nv_inference_compute_output_duration_us"]] += output_ns // us

    def record_execution(self, queued_ns: Sequence[int] = (0,)) -> None:
        """One onnxruntime run, of one request or of a dynamic batch, with each request's wait for it
        (0 without dynamic batching)."""
        with self._lock:
            self.execution_count += 1
            for ns in queued_ns:
                self.queue.add(ns)
            if self.shared is not None:
                self.shared[INDEX["nv_inference_exec_count"]] += 1
                self.shared[INDEX["nv_inference_queue_duration_us"]] += sum(queued_ns) // 1000

    def record_failure(self, ns: int) -> None:
        """One request refused or failed after ns nanoseconds."""
        with self._lock:
            self.fail.add(ns)
            if self.shared is not None:
                self.shared[INDEX["nv_inference_request_failure"]] += 1

    def durations(self) -> dict[str, Duration]:
        """The durations by InferStatistics field name, in its order."""
        return {name: getattr(self, name) for name in DURATIONS}

    def snapshot(self) -> Statistics:
        """A consistent copy to report."""
        with self._lock:
            copy = Statistics(self.inference_count, self.execution_count, self.last_inference_ms)
            for name, value in self.durations().items():
                setattr(copy, name, Duration(value.count, value.ns))
            return copy
