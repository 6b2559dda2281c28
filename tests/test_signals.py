"""SIGTERM and SIGINT stop `forwardpass serve` whichever thread takes them and whatever the process
is doing when they come (server/workers.py, "Signals")."""

import ctypes
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from harness import ROOT, ServerProcess

WRITE = {"x86_64": 1, "aarch64": 64}.get(platform.machine())  # the write(2) syscall's number


@pytest.fixture
def committed(tmp_path):
    shutil.copytree(ROOT / "models", tmp_path / "models")
    return tmp_path / "models"


def tgkill(pid: int, tid: int, sig: int) -> None:
    """Send a signal to one thread of a process, as the kernel may when it is sent to the process."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "tgkill"):
        pytest.skip("this C library has no tgkill (glibc 2.30 or later has)")
    if libc.tgkill(pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill {pid} {tid}")


def other_thread(pid: int) -> int:
    """A thread of pid besides its main one that does not block SIGTERM (gRPC's, onnxruntime's)."""
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        status = open(f"/proc/{pid}/task/{tid}/status").read()
        blocked = int(status.split("SigBlk:")[1].split()[0], 16)
        if tid != pid and not blocked & (1 << (signal.SIGTERM - 1)):
            return tid
    pytest.skip(f"process {pid} has no thread besides its main one that takes SIGTERM")


def children(pid: int) -> list[int]:
    return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]


def kill_tree(process: subprocess.Popen) -> None:
    """What a failed test leaves serving: its workers, then the supervisor."""
    if process.poll() is None:
        for pid in children(process.pid):
            os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait()


@pytest.mark.parametrize("process", ["supervisor", "worker"])
def test_a_stop_signal_taken_by_another_thread_is_acted_on(committed, process):
    # The main thread sleeps (waitpid, or the worker's wait for a stop) while the C handler runs in
    # the thread the kernel chose; before the fix the Python handler waited for a wake-up that never came.
    server = ServerProcess(committed, "--workers", "1")
    try:
        supervisor = server.process.pid
        (worker,) = children(supervisor)
        target = supervisor if process == "supervisor" else worker
        tgkill(target, other_thread(target), signal.SIGTERM)
        if process == "supervisor":
            assert server.process.wait(20) == 0, server.output()
            assert "all workers stopped" in server.output()
        else:  # the worker stops by itself; its supervisor, not told to stop, replaces it
            deadline = time.monotonic() + 20
            while f"(pid {worker}) died: exit code 0" not in server.output() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert f"(pid {worker}) died: exit code 0" in server.output()
    finally:
        try:
            server.stop()
        except subprocess.TimeoutExpired:
            kill_tree(server.process)


def test_a_stop_signal_in_the_middle_of_a_log_line_still_stops_the_workers(committed):
    # A handler that logged ran inside the interrupted write of another log line to the same stream,
    # raised "reentrant call" there, and never told the workers to stop: the server served on.
    if WRITE is None:
        pytest.skip(f"the write syscall's number on {platform.machine()} is not known here")
    read_end, write_end = os.pipe()
    filler = os.open(f"/proc/self/fd/{write_end}", os.O_WRONLY | os.O_NONBLOCK)  # its own non-blocking side
    command = [sys.executable, "-m", "forwardpass", "serve", "--grpc-port", "0", "--http-port", "0",
               "--provider", "cpu", "--workers", "1", "--model-repository", str(committed)]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=write_end, stderr=write_end)
    os.close(write_end)
    output, gate, ready = [], threading.Lock(), threading.Event()

    def read() -> None:  # drains the server's output except while the test holds the gate
        while True:
            readable = select.select([read_end], [], [], 0.05)[0]
            with gate:
                chunk = os.read(read_end, 65536) if readable else b"-"
            if not chunk:
                return
            output.append(chunk.decode(errors="replace").strip("-"))
            if "serving on" in "".join(output):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(60), "".join(output)
        (worker,) = children(process.pid)
        with gate:
            try:
                while True:
                    os.write(filler, b"-")
            except BlockingIOError:  # the pipe is full: the server's next log line blocks in write(2)
                pass
            os.kill(worker, signal.SIGKILL)  # the supervisor logs the death: that line's write blocks
            deadline = time.monotonic() + 20
            syscall = ""
            while not syscall.startswith(f"{WRITE} 0x2 ") and time.monotonic() < deadline:
                time.sleep(0.02)
                syscall = open(f"/proc/{process.pid}/syscall").read()
            assert syscall.startswith(f"{WRITE} 0x2 "), f"the supervisor is not writing to stderr: {syscall}"
            tgkill(process.pid, process.pid, signal.SIGTERM)  # its main thread: the write is interrupted
            time.sleep(0.5)
        assert process.wait(20) == 0, "".join(output)
        time.sleep(0.2)  # the last lines
        assert "all workers stopped" in "".join(output)
        assert "reentrant call" not in "".join(output)
    finally:
        kill_tree(process)
        os.close(filler)
