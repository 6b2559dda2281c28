"""Triton's dynamic batcher, so that a config.pbtxt means the same here as in Triton.

Requests queue in arrival order. A batch takes the oldest request and the following ones while
their rows fit in max_batch_size (rows, not requests; a request is never split). It runs at once
when it reaches max_batch_size or a preferred_batch_size, or when the next request does not fit;
otherwise it waits until the oldest request has waited max_queue_delay_microseconds (0 by
default: no wait, so batches form only from requests that arrived while the previous batch ran,
as with one Triton model instance). Each caller gets exactly its own rows back.

No thread of its own: the caller that finds the batcher idle leads, forms the batch and runs it;
the others wait. When it is done, the leader hands the lead to the oldest request still queued.
An idle batcher therefore costs a lone request no thread switch, which keeps batching no slower
than running requests one by one on a CPU.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from forwardpass.runtime import Runtime

from .stats import Statistics
from .tracing import Trace


@dataclass(eq=False)  # identity, not field equality: x is an array
class Pending:
    """One request waiting for its batch, or to lead the next one."""

    x: np.ndarray
    rows: int
    outputs: tuple[str, ...]
    enqueued_ns: int = field(default_factory=time.monotonic_ns)
    wake: threading.Event | None = None  # followers only: a leader never waits
    lead: bool = False  # set, then woken: form and run the next batch
    result: dict[str, np.ndarray] | None = None
    error: BaseException | None = None
    trace: Trace | None = None  # a traced request's: the leader notes its queue and compute phases


class Batcher:
    """Merges concurrent requests for one model version into single onnxruntime calls."""

    def __init__(
        self,
        runtime: Runtime,
        batch_axis: int,
        max_batch_size: int,
        preferred: Sequence[int] = (),
        max_delay_us: int = 0,
        stats: Statistics | None = None,
    ) -> None:
        self.runtime, self.axis, self.max_rows = runtime, batch_axis, max_batch_size
        self.preferred = set(preferred)
        self.delay_ns = max_delay_us * 1000
        self.stats = stats or Statistics()
        self.queue: deque[Pending] = deque()
        self.arrived = threading.Condition()  # guards queue and busy; notified on every arrival
        self.busy = False  # a leader is forming or running a batch

    def infer(
        self, x: np.ndarray, rows: int, outputs: tuple[str, ...], trace: Trace | None = None
    ) -> dict[str, np.ndarray]:
        """Queue x (checked by the data plane: dtype, shape, rows) and wait for its own outputs."""
        pending = Pending(x, rows, outputs, trace=trace)
        with self.arrived:
            self.queue.append(pending)
            pending.lead = not self.busy
            if not pending.lead:
                pending.wake = threading.Event()
            self.busy = True
            self.arrived.notify()
        while pending.result is None and pending.error is None:
            if pending.lead:
                pending.lead = False
                self._lead()
            else:
                pending.wake.wait()
                pending.wake.clear()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _lead(self) -> None:
        """Form one batch, run it, then pass the lead on (or leave the batcher idle)."""
        batch = self._form()
        self._run(batch)
        with self.arrived:
            successor = self.queue[0] if self.queue else None
            self.busy = successor is not None
            if successor is not None:
                successor.lead = True
        for pending in batch:
            if pending.wake is not None:
                pending.wake.set()
        if successor is not None:  # still queued, so not in this batch, and a follower
            successor.wake.set()

    def _form(self) -> list[Pending]:
        with self.arrived:
            batch = [self.queue.popleft()]
            rows = batch[0].rows
            deadline = batch[0].enqueued_ns + self.delay_ns
            while True:
                while self.queue and rows + self.queue[0].rows <= self.max_rows:
                    batch.append(self.queue.popleft())
                    rows += batch[-1].rows
                full = rows == self.max_rows or rows in self.preferred or bool(self.queue)  # next one does not fit
                remaining = deadline - time.monotonic_ns()
                if full or remaining <= 0:
                    return batch
                self.arrived.wait(remaining / 1e9)

    def _run(self, batch: list[Pending]) -> None:
        start = joined = computed = time.monotonic_ns()
        try:
            names = tuple(dict.fromkeys(name for p in batch for name in p.outputs))  # union, in order
            x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch], axis=self.axis)
            joined = time.monotonic_ns()
            outputs = self.runtime.run_trusted(x, names)  # each x was checked by the data plane
            computed = time.monotonic_ns()
            first = 0
            for pending in batch:  # each caller's own rows: views, no copies
                rows = slice(first, first + pending.rows)
                first += pending.rows
                where = rows if self.axis == 0 else (slice(None), rows)
                pending.result = {name: outputs[name][where] for name in pending.outputs}
        except Exception as exc:  # every caller of the batch hears of it; the batcher goes on
            for pending in batch:
                pending.error = exc
        queued = [start - pending.enqueued_ns for pending in batch]
        done = time.monotonic_ns()
        for pending in batch:  # before any caller is woken (_lead), so each finds its phases noted
            if pending.trace is not None:
                pending.trace.add("queue", pending.enqueued_ns, start)
                pending.trace.add("compute", start, done)
        rows = sum(pending.rows for pending in batch)
        self.stats.record_execution(rows, queued, joined - start, computed - joined, done - computed)
