"""Statistics of the server, not of a worker: Triton's ModelStatistics and the Prometheus metrics
(server/metrics.py) read one table of int64 counters in memory that every worker shares.

The supervisor maps the table before it forks: a row per worker in each slot, a slot per model
version served. A worker adds only into its own row, under a lock of its own process, so recording
a request is a few writes and takes no lock across processes; a reader sums the slot's rows, so
every worker answers with the server's totals, and two reads never go back (each row only grows).
A restarted worker keeps adding to its predecessor's row.

The table is bounded, and says so:
- Slots: one for every version folder in the repository at start-up and SPARE_SLOTS more. A slot
  belongs to a version while any worker serves it. When the last worker drops the version (poll
  mode's rescan, an unload), the slot is free for the next version that comes: slots bound the
  versions served at once, not the versions seen. As in Triton, whose statistics live in the loaded
  model and go with it, a version loaded again after every worker dropped it starts from zero; one
  that some worker kept serving (poll mode's workers rescan at their own moments) keeps counting.
  If every slot is taken, a further version still serves, with a warning: its statistics are then
  its worker's own and /metrics leaves it out. A request that a worker finishes after it dropped the
  version is not counted (the version is gone from that worker's statistics).
- batch_stats (per onnxruntime run, by the rows in the run): each worker's row keeps BATCH_SIZES
  distinct sizes, the first it runs; runs of any other size go to one overflow entry, reported with
  batch_size 0 (no run has 0 rows). Exact sizes whatever max_batch_size is (a client that always
  sends 65,536 rows is one entry), at a fixed cost per row; a dynamic batcher that forms more
  distinct sizes than that puts the rarer ones together.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import struct
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forwardpass.layout import model_folders, version_folders

log = logging.getLogger(__name__)

SPARE_SLOTS = 64  # versions and models that may come while serving, beyond those found at start-up
BATCH_SIZES = 32  # distinct batch sizes each worker counts apart per version; others share one entry

# The durations of Triton's InferStatistics that we count, in its field order (both doors write them).
DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
# The fields of a row: three counts, then a count and nanoseconds per duration, then the batch entries.
FIELD = {
    name: i
    for i, name in enumerate(
        ("inference_count", "execution_count", "last_inference_ms")
        + tuple(f"{d}_{part}" for d in DURATIONS for part in ("count", "ns"))
    )
}
# A batch entry: its batch size (0 while free), its runs, and their compute input, infer and output ns.
BATCH_ENTRY = ("batch_size", "count", "compute_input_ns", "compute_infer_ns", "compute_output_ns")
BATCH = len(FIELD)  # the first entry; the last of BATCH_SIZES + 1 is the overflow
OVERFLOW = BATCH + BATCH_SIZES * len(BATCH_ENTRY)
FIELDS = OVERFLOW + len(BATCH_ENTRY)
KEY_BYTES = 512  # a slot's "model/version": a folder name is at most 255 bytes, and so is a version's

# The hot path's indices, looked up once.
_ROWS, _RUNS, _LAST = FIELD["inference_count"], FIELD["execution_count"], FIELD["last_inference_ms"]
_FAIL, _QUEUE = FIELD["fail_count"], FIELD["queue_count"]
_HEAD = struct.Struct(f"{BATCH}q")  # a row's counts and durations, in FIELD's order, as its memoryview holds them


@dataclass(frozen=True)
class Duration:
    """A count of events and their cumulative nanoseconds."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True)
class BatchStatistics:
    """The onnxruntime runs of one batch size (0: the overflow entry) and their durations."""

    batch_size: int
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


@dataclass(frozen=True)
class Totals:
    """One version's counters summed over every worker, as plain values to report."""

    inference_count: int  # rows computed
    execution_count: int  # onnxruntime runs
    last_inference_ms: int  # the latest over every worker
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    batch_stats: tuple[BatchStatistics, ...] = ()

    def durations(self) -> dict[str, Duration]:
        """The durations by InferStatistics field name, in its order."""
        return {name: getattr(self, name) for name in DURATIONS}


def totals(rows: np.ndarray) -> Totals:
    """Every worker's row of one slot ([workers, FIELDS]) as one version's totals."""
    rows = np.array(rows)  # one copy: each field read once, in memory order
    summed = rows.sum(axis=0).tolist()
    durations = {d: Duration(summed[FIELD[f"{d}_count"]], summed[FIELD[f"{d}_ns"]]) for d in DURATIONS}
    batches: dict[int, list[int]] = {}
    for row in rows.tolist():
        for at in range(BATCH, FIELDS, len(BATCH_ENTRY)):
            size, count, *ns = row[at : at + len(BATCH_ENTRY)]
            if count:
                entry = batches.setdefault(0 if at == OVERFLOW else size, [0, 0, 0, 0])
                for i, value in enumerate((count, *ns)):
                    entry[i] += value
    batch_stats = tuple(
        BatchStatistics(size, *(Duration(count, ns) for ns in spent))
        for size, (count, *spent) in sorted(batches.items(), key=lambda item: item[0] or float("inf"))
    )  # by size, the overflow last
    return Totals(summed[_ROWS], summed[_RUNS], int(rows[:, _LAST].max()), **durations, batch_stats=batch_stats)


class Statistics:
    """One model version's counters as one worker records them: into its own row of the table once
    the worker has attached it (StatisticsTable.serve), into a row of its own before that."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # threads of this worker share the row
        self._use(*_private_row())

    def record_success(self, rows: int, input_ns: int, infer_ns: int, output_ns: int, ran_alone: bool = False) -> None:
        """One request answered: its rows, and the time spent decoding, computing (queue included)
        and encoding. `ran_alone`: the request was an onnxruntime run of its own (no dynamic batching),
        counted here as record_execution would count it (no wait, infer_ns computing), under the same lock."""
        now_ms = time.time_ns() // 1_000_000
        runs = 1 if ran_alone else 0
        with self._lock:
            row = self._row
            # Every request passes here: the row's head read and written in one call each, not 13
            # additions of a memoryview item, two calls each.
            done, ran, _, ok, ok_ns, fail, fail_ns, waits, wait_ns, i, i_ns, c, c_ns, o, o_ns = _HEAD.unpack_from(row)
            _HEAD.pack_into(
                row, 0, done + rows, ran + runs, now_ms, ok + 1, ok_ns + input_ns + infer_ns + output_ns,
                fail, fail_ns, waits + runs, wait_ns, i + 1, i_ns + input_ns, c + 1, c_ns + infer_ns, o + 1,
                o_ns + output_ns,
            )  # fmt: skip
            if ran_alone:  # its run's batch entry: no input or output time apart from the request's
                at = self._entries.get(rows) or self._entry(rows)
                row[at] += 1
                row[at + 2] += infer_ns

    def record_execution(
        self, rows: int, queued_ns: Sequence[int] = (0,), input_ns: int = 0, infer_ns: int = 0, output_ns: int = 0
    ) -> None:
        """One onnxruntime run of `rows` rows, of one request or of a dynamic batch: each request's wait
        for it (0 without dynamic batching), and the run's time joining inputs, computing and cutting
        each caller's outputs."""
        with self._lock:
            self._run(self._row, rows, len(queued_ns), sum(queued_ns), input_ns, infer_ns, output_ns)

    def _run(
        self, row: memoryview, rows: int, waits: int, queued_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One run into `row`; the caller holds the lock."""
        row[_RUNS] += 1
        row[_QUEUE] += waits
        row[_QUEUE + 1] += queued_ns
        at = self._entries.get(rows) or self._entry(rows)
        row[at] += 1
        row[at + 1] += input_ns
        row[at + 2] += infer_ns
        row[at + 3] += output_ns

    def record_failure(self, ns: int) -> None:
        """One request refused or failed after ns nanoseconds."""
        with self._lock:
            self._row[_FAIL] += 1
            self._row[_FAIL + 1] += ns

    def snapshot(self) -> Totals:
        """The version's counters summed over every worker."""
        return totals(self._rows)

    def _entry(self, rows: int) -> int:
        """The count field of the batch entry for `rows`: a free one this worker claims, or the overflow."""
        if not self._full and rows > 0:  # no run has 0 rows; were one to come, it is no size to keep
            for at in range(BATCH, OVERFLOW, len(BATCH_ENTRY)):
                if self._row[at] == 0:
                    self._row[at] = rows  # written before its count: a reader that sees a count sees its size
                    self._entries[rows] = at + 1
                    return at + 1
            self._full = True
        return OVERFLOW + 1

    def _use(self, row: memoryview, rows: np.ndarray) -> None:
        """Write into `row` from now on, and read `rows`; the caller holds the lock (or owns self)."""
        self._row, self._rows = row, rows
        sizes = {row[at]: at + 1 for at in range(BATCH, OVERFLOW, len(BATCH_ENTRY)) if row[at]}
        self._entries = sizes  # batch size -> its count field; a predecessor's row has some already
        self._full = len(sizes) == BATCH_SIZES

    def _attach(self, row: memoryview, rows: np.ndarray) -> None:
        """Move to this worker's row of a shared slot, carrying what was counted before."""
        with self._lock:
            before = self._row.tolist()
            self._use(row, rows)
            for i in range(BATCH):
                row[i] = max(row[i], before[i]) if i == _LAST else row[i] + before[i]
            for at in range(BATCH, FIELDS, len(BATCH_ENTRY)):
                size, count, *ns = before[at : at + len(BATCH_ENTRY)]
                if count:
                    into = OVERFLOW + 1 if at == OVERFLOW else self._entries.get(size) or self._entry(size)
                    for i, value in enumerate((count, *ns)):
                        row[into + i] += value

    def _detach(self) -> None:
        """Stop writing into the shared slot (the version is no longer served by this worker)."""
        with self._lock:
            self._use(*_private_row())


def _private_row() -> tuple[memoryview, np.ndarray]:
    """A row of one's own, for a version not (yet) in a shared table."""
    memory = bytearray(FIELDS * 8)
    return memoryview(memory).cast("q"), np.frombuffer(memory, np.int64).reshape(1, FIELDS)


def table_slots(repository: Path) -> int:
    """Slots for every version folder of the repository now, and SPARE_SLOTS more."""
    return sum(len(version_folders(folder)) for folder in model_folders(Path(repository))) + SPARE_SLOTS


class StatisticsTable:
    """Counters [worker, slot, field] and the version each slot belongs to, in memory that every
    forked process shares. Only serve() (a worker's loads and unloads) and versions() (a scrape)
    take the lock across processes; recording takes none."""

    def __init__(self, slots: int, workers: int) -> None:
        self.slots, self.workers = slots, workers
        keys_at = workers * slots * FIELDS * 8  # the counters come first, then the keys, then who holds each slot
        held_at = keys_at + slots * KEY_BYTES
        self._fd = _shared_file(held_at + slots * workers)
        memory = mmap.mmap(self._fd, held_at + slots * workers)  # MAP_SHARED: forked processes see the same bytes
        self.counters = np.frombuffer(memory, np.int64, workers * slots * FIELDS).reshape(workers, slots, FIELDS)
        self.keys = np.frombuffer(memory, f"S{KEY_BYTES}", slots, offset=keys_at)  # "model/version"; b"": free
        self.held = np.frombuffer(memory, np.bool_, slots * workers, offset=held_at).reshape(slots, workers)
        self._words = memoryview(memory)[:keys_at].cast("q")  # a memoryview item is cheaper to add to than numpy's
        self._lock = threading.Lock()  # the lock across processes does not exclude this process's threads
        self._attached: dict[tuple[str, str], tuple[int, Statistics]] = {}  # this process's: slot -1 for none
        self._fresh = True  # no serve() yet in this process: rows of a dead predecessor may be marked held

    def serve(self, worker: int, versions: Mapping[tuple[str, str], Statistics]) -> None:
        """This worker serves exactly these (model, version)s now: attach each new one to its slot
        (the one a sibling already uses for it, else a free one, zeroed), give back the others."""
        with self._lock:
            attached = {key: stats for key, (slot, stats) in self._attached.items() if slot >= 0}
            if not self._fresh and attached == dict(versions):  # Statistics compare by identity
                return
            with self._across():
                for key in [key for key, (_, stats) in self._attached.items() if versions.get(key) is not stats]:
                    slot, stats = self._attached.pop(key)
                    stats._detach()  # first: once it lets go, nothing of this worker's writes there
                    if slot >= 0:
                        self.held[slot, worker] = False
                self._free()  # before attaching: a version that replaces another may take its slot
                for key, stats in versions.items():
                    if self._attached.get(key, (-1, None))[0] < 0:
                        self._attach(worker, key, stats)
                # Only now, so that a restarted worker found its predecessor's slots: what that one
                # held and this one does not serve is given back.
                self.held[:, worker] = False
                self.held[[slot for slot, _ in self._attached.values() if slot >= 0], worker] = True
                self._free()
                self._fresh = False

    def versions(self) -> list[tuple[str, str, Totals]]:
        """Each version served now, with its totals, by model and version."""
        found = []
        with self._lock, self._across():  # no slot changes hands while it is read
            for slot, key in enumerate(self.keys.tolist()):
                if key:
                    model, version = key.decode("utf-8", "replace").rsplit("/", 1)
                    found.append((model, version, totals(self.counters[:, slot])))
        return sorted(found, key=lambda f: (f[0], len(f[1]), f[1]))

    def _free(self) -> None:
        self.keys[~self.held.any(axis=1)] = b""  # a version no worker serves frees its slot

    def _attach(self, worker: int, key: tuple[str, str], stats: Statistics) -> None:
        name = "/".join(key).encode("utf-8", "surrogateescape")
        taken = np.flatnonzero(self.keys == name)
        if taken.size:
            slot = int(taken[0])  # a sibling serves it, or this worker's predecessor did: keep counting
        else:
            free = np.flatnonzero(self.keys == b"")
            if not free.size:
                if key not in self._attached:  # once, not at every rescan
                    log.warning(
                        "statistics of %s version %s are this worker's own: all %d slots are taken "
                        "(every version folder at start-up and %d more)", *key, self.slots, SPARE_SLOTS
                    )  # fmt: skip
                self._attached[key] = (-1, stats)
                return
            slot = int(free[0])
            self.counters[:, slot] = 0  # no worker writes here: each detached before it let go
            self.keys[slot] = name
        self.held[slot, worker] = True
        start = (worker * self.slots + slot) * FIELDS
        stats._attach(self._words[start : start + FIELDS], self.counters[:, slot])
        self._attached[key] = (slot, stats)

    @contextlib.contextmanager
    def _across(self) -> Iterator[None]:
        """The lock across processes: a POSIX record lock, which the kernel drops if its holder dies."""
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)


def _shared_file(size: int) -> int:
    """A file of `size` zero bytes in memory, for the table and its lock; forked processes inherit it."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("forwardpass-statistics")
    else:  # not Linux: an unlinked temporary file
        handle = tempfile.TemporaryFile()
        fd = os.dup(handle.fileno())
        handle.close()
    os.ftruncate(fd, size)
    return fd
