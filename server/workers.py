"""Worker processes, as grpc's multiprocessing example has them: fork before any gRPC object
exists, each worker its own gRPC server on the same port (SO_REUSEPORT) and its own onnxruntime
sessions; the kernel spreads connections over them.

The parent only supervises: it waits for every worker to say ready (or why not), logs and restarts
a worker that dies, and on SIGTERM or Ctrl-C passes the signal on and waits for all to drain.

Signals, in both kinds of process. Python runs a handler in the main thread, and only once that
thread runs bytecode again; the kernel hands a signal sent to the process to any thread that does
not block it (gRPC's, onnxruntime's, uvicorn's), where the interpreter's C handler only notes it. A
main thread asleep in waitpid or Event.wait would sleep on with the note unread, so each process's
main thread sleeps on a SignalWakeup instead, which the interpreter writes to from whichever thread
takes the signal. The handlers only note the signal and pass it on: a handler that logged could run
in the middle of another log line's write and fail there ("reentrant call") before doing its work.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from forwardpass.errors import ForwardpassError
from forwardpass.layout import model_folders

from .app import Server, check_port_free
from .control import write_wanted
from .hosts import bare, family
from .options import ServeOptions
from .stats import StatisticsTable, table_slots

log = logging.getLogger(__name__)

RESTART_PAUSE = 0.5  # seconds between a worker's death and its replacement, so a crash loop idles
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@dataclass
class Worker:
    """A forked worker: its index (stable across restarts) and its pid."""

    index: int
    pid: int


def serve(options: ServeOptions) -> int:
    """Serve with options.workers processes until SIGTERM or SIGINT; returns the exit code."""
    check_port_free(options.host, options.grpc_port, "gRPC")
    if options.http:
        check_port_free(options.host, options.http_port, "HTTP")
    for warning in exposure_warnings(options):
        log.warning("%s", warning)
    if options.metrics_port:
        check_port_free(options.metrics_host, options.metrics_port, "metrics")
    # Before the fork, so that every worker counts into it and reads it (server/stats.py).
    statistics = StatisticsTable(table_slots(options.model_repository), options.workers)
    wanted_dir = None
    if options.model_control_mode == "explicit":  # the loaded set every worker applies
        wanted_dir = tempfile.TemporaryDirectory(prefix="forwardpass-models-")
        folders = [f.name for f in model_folders(options.model_repository)]
        initial = folders if "*" in options.load_models else options.load_models
        write_wanted(Path(wanted_dir.name) / "wanted.json", dict.fromkeys(initial, 0))
        options = replace(options, wanted_file=Path(wanted_dir.name) / "wanted.json")
    reservations = []  # every worker must bind the same ports: pick free ones here, hold them until they do
    for name in ("grpc_port", "http_port") if options.http else ("grpc_port",):
        if getattr(options, name) == 0:
            reservations.append(reserve_port(options.host))
            options = replace(options, **{name: reservations[-1].getsockname()[1]})
    try:
        return Supervisor(options, reservations, statistics).run()
    finally:
        for reservation in reservations:
            reservation.close()
        if wanted_dir is not None:
            wanted_dir.cleanup()


def exposure_warnings(options: ServeOptions) -> list[str]:
    """What is reachable beyond this machine without protection."""
    warnings = []
    if not is_loopback(options.host) and not (options.tls or options.auth_token):
        warnings.append(f"listening on {options.host} without TLS or a token: anyone who reaches it can call it")
    if options.metrics_port and not is_loopback(options.metrics_host):  # /metrics has neither TLS nor a token
        warnings.append(
            f"metrics on {options.metrics_host}: anyone who reaches it can read the model names and traffic"
        )
    return warnings


def is_loopback(host: str) -> bool:
    """Whether host names this machine only (127.0.0.0/8, ::1, localhost)."""
    if bare(host) == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare(host)).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def reserve_port(host: str) -> socket.socket:
    """A bound, not listening, SO_REUSEPORT socket on a free port: workers can bind it, others cannot."""
    sock = socket.socket(family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((bare(host), 0))
    return sock


class SignalWakeup:
    """A pipe the interpreter writes a byte to for every handled signal, whichever thread the kernel
    hands it to (signal.set_wakeup_fd); sleeping on it, the main thread wakes to run the handler."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)  # set_wakeup_fd's condition: a full pipe never blocks a signal
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)  # one unread byte is wake-up enough

    def wait(self) -> set[int]:
        """Sleep until a signal comes (at once if one came since the last call); the signals that came.
        Callers act on these, not only on what the handler did: the handler may run a moment later."""
        select.select([self.read_fd], [], [])
        received = set()
        try:
            while chunk := os.read(self.read_fd, 512):
                received.update(chunk)  # one byte per signal: its number
        except BlockingIOError:  # drained
            pass
        return received

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self.read_fd)
        os.close(self.write_fd)


class Supervisor:
    """Forks, watches and restarts the workers; stops them all on a signal."""

    def __init__(
        self,
        options: ServeOptions,
        reservations: list[socket.socket] = (),
        statistics: StatisticsTable | None = None,
    ) -> None:
        self.options, self.reservations, self.statistics = options, reservations, statistics
        self.workers: dict[int, Worker] = {}
        self.stopping = False
        self.announced = False  # the stop is logged once, by the main loop (see _on_signal)

    def run(self) -> int:
        self.wakeup = SignalWakeup()
        # SIGCHLD only wakes the loop: a worker's exit and a stop signal end the same sleep.
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (*STOP_SIGNALS, signal.SIGCHLD)}
        try:
            banners = []
            for index in range(self.options.workers):
                if self.stopping:  # a signal during start-up: start no more
                    break
                try:
                    banners.append(self._spawn(index))
                except ForwardpassError:
                    self._stop_all()
                    raise
            if banners and not self.stopping:
                log.info("%s; %d worker%s (pids %s)", banners[0], len(self.workers), "s"[: len(self.workers) > 1],
                         ", ".join(str(pid) for pid in sorted(self.workers)))  # fmt: skip
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.wakeup.close()

    def _supervise(self) -> int:
        code = 0
        while self.workers:
            self._announce_stop()
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:  # none has exited: sleep until a signal, SIGCHLD among them
                if self.wakeup.wait() & STOP_SIGNALS:
                    self._stop_all()
                continue
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            if self.stopping:
                code = code or (os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
                continue
            log.error("worker %d (pid %d) died: %s; restarting it", worker.index, pid, describe(status))
            time.sleep(RESTART_PAUSE)
            if self.stopping:  # a signal came during the log line or the pause: no replacement to stop later
                continue
            try:
                self._spawn(worker.index)
            except ForwardpassError as exc:
                log.error("worker %d could not restart: %s; stopping", worker.index, exc)
                self._stop_all()
                return 1
        log.info("all workers stopped")
        return code

    def _spawn(self, index: int) -> str:
        """Fork one worker and wait for its first line: its banner, or why it could not start."""
        read_end, write_end = os.pipe()
        joining = bool(self.workers)  # others serve the ports already: load before binding
        pid = os.fork()
        if pid == 0:  # the worker: none of the supervisor's signal plumbing (run_worker sets its own)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.wakeup.close()
            os.close(read_end)
            for reservation in self.reservations:
                reservation.close()
            os._exit(run_worker(self.options, write_end, self.statistics, index, joining))
        os.close(write_end)
        self.workers[pid] = Worker(index, pid)
        if self.stopping:  # the signal came between the check and the fork: this one stops too
            os.kill(pid, signal.SIGTERM)
        with os.fdopen(read_end) as pipe:
            line = pipe.readline().rstrip("\n")
        status, _, text = line.partition(" ")
        if status != "ready":
            os.waitpid(pid, 0)
            self.workers.pop(pid, None)
            raise ForwardpassError(text or f"worker {index} exited before it was ready")
        return text

    def _on_signal(self, signum: int, frame) -> None:
        """SIGTERM or SIGINT: pass SIGTERM on to every worker. No logging here: this can run inside
        another log line's write to the same stream, where a second write raises before the workers
        are told; the main loop says it (_announce_stop)."""
        if signum in STOP_SIGNALS:
            self._stop_all()

    def _announce_stop(self) -> None:
        if self.stopping and not self.announced:
            self.announced = True
            log.info("stopping %d workers: no new calls; finishing those in flight (grace %gs)",
                     len(self.workers), self.options.grace)  # fmt: skip

    def _stop_all(self) -> None:
        self.stopping = True
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def run_worker(
    options: ServeOptions,
    ready_fd: int,
    statistics: StatisticsTable | None = None,
    index: int = 0,
    join_ready: bool = False,
) -> int:
    """The worker's life: serve until SIGTERM, telling the parent on ready_fd when it is ready.
    With join_ready it binds only once its models have loaded (see Server.start)."""
    stop: list[int] = []  # the handler only notes the signal (see the module's docstring)
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _: stop.append(signum))
    wakeup = SignalWakeup()
    die_with_parent()
    with os.fdopen(ready_fd, "w") as ready:
        try:
            server = Server(options, statistics, index)
            server.start(join_ready)
        except ForwardpassError as exc:
            ready.write(f"error {exc}\n")
            return 2
        except Exception as exc:  # a bug: the parent shows it, the worker does not hang
            log.exception("worker failed to start")
            ready.write(f"error worker failed to start: {type(exc).__name__}: {exc}\n")
            return 1
        ready.write(f"ready {server.banner()}\n")
    if options.model_control_mode == "explicit":
        server.control.follow()
    while not stop:
        stop += wakeup.wait() & STOP_SIGNALS
    server.stop()
    return 0


def die_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent dies, so a killed supervisor leaves no orphans serving."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's own SIGTERM still reaches workers
        pass


def describe(status: int) -> str:
    """A wait status in words."""
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
