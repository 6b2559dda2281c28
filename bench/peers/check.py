"""Check the peer servers: build their venvs, start each, compare its answers to onnxruntime, stop it.

Run with the project's venv (it has tritonclient and onnxruntime):

    .venv/bin/python bench/peers/check.py [--root DIR] [--model models/mlp_3_4_1/1/model.onnx]

For MLServer (parallel_workers 1 and 0, adaptive batching off and on), PyTriton and KServe's model
server: a 2-row request and a 65,536-row request must answer y within 1e-6 of onnxruntime run here
on the same file, through every door the serving benchmark uses (gRPC for MLServer and PyTriton;
HTTP/REST with JSON for all three, and with Triton's binary tensor extension for PyTriton and KServe),
and after stop() no process of the server may be left. Exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/, so that `peers` imports
from peers import (  # noqa: E402
    MODEL_NAME,
    default_root,
    ensure_venv,
    free_port,
    start_kserve,
    start_mlserver,
    start_pytriton,
    stop,
    wait_http_ready,
    wait_ready,
)

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-6
BIG_ROWS = 65536


def infer(port: int, x: np.ndarray) -> np.ndarray:
    """Send ``x`` to the server on 127.0.0.1:``port`` with tritonclient and return its ``y``."""
    with grpcclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
        inp = grpcclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(MODEL_NAME, [inp], outputs=[grpcclient.InferRequestedOutput("y")], client_timeout=60)
        return result.as_numpy("y")


def infer_http(port: int, x: np.ndarray, binary: bool) -> np.ndarray:
    """The same over HTTP/REST with tritonclient.http: JSON both ways, or Triton's binary tensor extension."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60, connection_timeout=60)
    try:
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("y", binary_data=binary)
        # tritonclient names no content type; KServe reads a body without application/json as binary.
        headers = None if binary else {"Content-Type": "application/json"}
        return client.infer(MODEL_NAME, [inp], outputs=[out], headers=headers).as_numpy("y")
    finally:
        client.close()


# The doors a server is checked through: (label, whether it is HTTP, infer(port, x)).
GRPC = ("gRPC", False, infer)
HTTP_JSON = ("HTTP JSON", True, partial(infer_http, binary=False))
HTTP_BINARY = ("HTTP binary", True, partial(infer_http, binary=True))


def leftovers(pgid: int, marker: str) -> list[str]:
    """Processes still in group ``pgid`` or whose command line names ``marker`` (zombies aside)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if state != "Z" and (int(pgrp) == pgid or marker in cmdline):
            found.append(f"{entry.name}: {cmdline.strip()[:160]}")
    return found


def check_server(
    name: str,
    start: Callable[[int, int, Path], subprocess.Popen],
    marker: str,
    model: Path,
    cases: list[np.ndarray],
    timeout: float,
    doors: tuple = (GRPC, HTTP_JSON),
) -> bool:
    """Start one server (``start(grpc_port, http_port, workdir)``), check its answers to ``cases``
    through each of ``doors`` against onnxruntime on ``model``, stop it, and look for processes left
    behind (in its group, or naming ``marker``).
    """
    reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ok = True
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        port, http_port = free_port(), free_port()
        started = time.monotonic()
        process = start(port, http_port, Path(tmp))
        try:
            ports = []
            if any(not http for _, http, _ in doors):
                wait_ready(port, process, timeout=timeout)
                ports.append(f"{port} (gRPC)")
            if any(http for _, http, _ in doors):
                wait_http_ready(http_port, process, timeout=timeout)
                ports.append(f"{http_port} (HTTP)")
            print(f"{name}: ready in {time.monotonic() - started:.1f} s on {', '.join(ports)}")
            for label, http, send in doors:
                for x in cases:
                    (want,) = reference.run(["y"], {"x": x})
                    got = send(http_port if http else port, x)
                    err = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
                    good = got.dtype == np.float32 and got.shape == want.shape and err <= TOLERANCE
                    ok &= good
                    verdict = "ok" if good else "FAIL"
                    print(
                        f"  {label:<11} {x.shape[0]:>6} rows: y {got.dtype}{list(got.shape)}, "
                        f"max |diff| {err:.1e}  {verdict}"
                    )
        except Exception as exc:  # report, then still stop the server and go on to the next one
            ok = False
            print(f"  FAIL: {type(exc).__name__}: {exc}")
        finally:
            stopping = time.monotonic()
            stop(process)
            stop_s = time.monotonic() - stopping
        left = leftovers(process.pid, marker)
        ok &= not left
        print(f"  stopped in {stop_s:.1f} s (exit {process.returncode}); processes left: {len(left)}")
        for line in left:
            print(f"    {line}")
    return ok


def main() -> int:
    """Build the venvs, check every server configuration, print a summary; 0 when all passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=default_root(), help="where the venvs are (made once)")
    parser.add_argument("--model", type=Path, default=REPO / "models/mlp_3_4_1/1/model.onnx")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds a server may take to be ready")
    args = parser.parse_args()
    model = args.model.resolve()

    pythons = {}
    for venv in ("mlserver", "pytriton", "kserve"):
        started = time.monotonic()
        pythons[venv] = ensure_venv(venv, args.root)
        print(f"venv-{venv}: {pythons[venv]} ({time.monotonic() - started:.0f} s)")

    rng = np.random.default_rng(0)
    cases = [
        np.array([[0.1, 0.2, 0.3], [1, -1, 0.5]], np.float32),
        rng.standard_normal((BIG_ROWS, 3)).astype(np.float32),
    ]
    # name -> (start(grpc_port, http_port, workdir), marker: the venv's path, which every process of that
    # server names, the doors to check)
    servers: dict[str, tuple[Callable[[int, int, Path], subprocess.Popen], str, tuple]] = {}
    for workers in (1, 0):
        for adaptive in (False, True):

            def mlserver(port, http_port, workdir, workers=workers, adaptive=adaptive):
                return start_mlserver(
                    pythons["mlserver"],
                    model,
                    port,
                    workdir,
                    parallel_workers=workers,
                    adaptive_batching=adaptive,
                    http_port=http_port,
                )

            # MLServer has no binary tensor extension over HTTP: JSON only.
            servers[f"mlserver parallel_workers={workers} adaptive_batching={adaptive}"] = (
                mlserver,
                str(pythons["mlserver"].parent.parent),
                (GRPC, HTTP_JSON),
            )

    def pytriton(port, http_port, workdir):
        return start_pytriton(pythons["pytriton"], model, port, workdir, max_batch_size=BIG_ROWS, http_port=http_port)

    def kserve(port, http_port, workdir):
        return start_kserve(pythons["kserve"], model, http_port, workdir)

    servers[f"pytriton max_batch_size={BIG_ROWS}"] = (
        pytriton,
        str(pythons["pytriton"].parent.parent),
        (GRPC, HTTP_JSON, HTTP_BINARY),
    )
    servers["kserve ModelServer (REST)"] = (kserve, str(pythons["kserve"].parent.parent), (HTTP_JSON, HTTP_BINARY))

    results = {
        name: check_server(name, start, marker, model, cases, args.timeout, doors)
        for name, (start, marker, doors) in servers.items()
    }
    print()
    for name, good in results.items():
        print(f"{'PASS' if good else 'FAIL'}  {name}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
