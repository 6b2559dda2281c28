"""make test-pristine's last phase: `make run` as a user starts it, every route of the README's HTTP
section answering 200, then Ctrl-C, which must stop make and the server promptly and cleanly.

Runs with the system's python3 in the clone's root (standard library only); exits 1 on any failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ORIGIN = "http://127.0.0.1:8000"  # make run's HTTP port
START_S = 900.0  # make run's first start builds its virtualenv and may fetch onnxruntime-web
STOP_S = 15.0  # Ctrl-C to exit: the drain's grace is under 10 s
INFER = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]}]}


def call(path: str, body: dict | None = None) -> tuple[int, bytes]:
    """One HTTP call: its status and body (a POST when there is a body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(ORIGIN + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_ready(process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"make run exited with {process.returncode} before it served")
        try:
            if call("/v2/health/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"make run did not serve within {START_S:g}s")


def check_routes() -> list[str]:
    """Every route's answer; the failures, each with its status and the start of its body."""
    failures = []

    def expect(path: str, body: dict | None = None) -> bytes:
        status, answer = call(path, body)
        print(f"  {'POST' if body is not None else 'GET '} {path}: {status}")
        if status != 200:
            failures.append(f"{path}: {status} {answer[:300]!r}")
        return answer

    for path in ("/", "/v2", "/v2/models/stats"):
        expect(path)
    index = expect("/v2/repository/index", {})
    try:
        models = [entry["name"] for entry in json.loads(index) if entry.get("state") == "READY"]
    except ValueError:
        models = []
    if not models:
        failures.append(f"/v2/repository/index lists no ready model: {index[:300]!r}")
    for model in models:
        for route in ("", "/ready", "/config", "/stats"):
            expect(f"/v2/models/{model}{route}")
    answer = expect("/v2/models/mlp_3_4_1/infer", INFER)
    try:
        outputs = json.loads(answer)["outputs"]
        assert len(outputs[0]["data"]) == 1, outputs
    except (ValueError, KeyError, IndexError, AssertionError) as error:
        failures.append(f"the infer answer has no one-row output: {error!r}")
    return failures


def in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def main() -> int:
    # The container shares the host's network: a server already there would answer in make run's place.
    busy = [port for port in (8000, 8001) if in_use(port)]
    if busy:
        print(f"FAILED: port {' and '.join(map(str, busy))} of 127.0.0.1 is taken on this host: make run needs it")
        return 1
    # In a process group of its own, as a shell runs a foreground job: Ctrl-C signals the whole group.
    process = subprocess.Popen(
        ["make", "run"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            sys.stdout.write("  | " + line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    failures = []
    try:
        wait_ready(process)
        failures += check_routes()
    except SystemExit as error:
        failures.append(str(error))
    finally:
        started = time.monotonic()
        try:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(STOP_S)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            failures.append(f"make run did not stop within {STOP_S:g}s of Ctrl-C")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        stopped = time.monotonic() - started
    reader.join(5)
    print(f"make run stopped {stopped:.1f}s after Ctrl-C (exit {process.returncode})")
    try:
        os.killpg(process.pid, 0)
        failures.append("a process of make run outlived Ctrl-C")
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if any("Traceback" in line for line in lines):
        failures.append("make run printed a traceback (above)")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
