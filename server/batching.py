"""Triton's dynamic batcher, so that a config.pbtxt means the same here as in Triton.

Requests queue in arrival order. One thread takes the oldest and adds the following ones while
their rows fit in max_batch_size (rows, not requests; a request is never split). The batch runs at
once when it reaches max_batch_size or a preferred_batch_size, or when nothing more fits; otherwise
it waits until the oldest request has waited max_queue_delay_microseconds (0 by default: no wait,
so batches form only from requests that arrived while the previous batch ran). Each caller gets
exactly its own rows back.
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


@dataclass
class Pending:
    """One request waiting for its batch."""

    x: np.ndarray
    rows: int
    outputs: tuple[str, ...]
    enqueued_ns: int = field(default_factory=time.monotonic_ns)
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


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
        self.ready = threading.Condition()
        threading.Thread(target=self._loop, name="batcher", daemon=True).start()

    def infer(self, x: np.ndarray, rows: int, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Queue x (rows already checked against max_batch_size) and wait for its own outputs."""
        pending = Pending(x, rows, outputs)
        with self.ready:
            self.queue.append(pending)
            self.ready.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _loop(self) -> None:
        while True:
            self._run(self._next_batch())

    def _next_batch(self) -> list[Pending]:
        with self.ready:
            while not self.queue:
                self.ready.wait()
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
                self.ready.wait(remaining / 1e9)

    def _run(self, batch: list[Pending]) -> None:
        start = time.monotonic_ns()
        try:
            names = tuple(dict.fromkeys(name for p in batch for name in p.outputs))  # union, in order
            x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch], axis=self.axis)
            outputs = self.runtime.run(x, names)
            self.stats.record_execution()
            bounds = np.cumsum([p.rows for p in batch])[:-1]
            pieces = {name: np.split(array, bounds, axis=self.axis) for name, array in outputs.items()}
            for i, pending in enumerate(batch):
                pending.result = {name: pieces[name][i] for name in pending.outputs}
        except BaseException as exc:  # every caller of the batch hears of it; the loop lives on
            for pending in batch:
                pending.error = exc
        for pending in batch:
            self.stats.record_queue(start - pending.enqueued_ns)
            pending.done.set()
