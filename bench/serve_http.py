"""The serve bench's HTTP/REST cells: the requests, the bare server's answers, and h2load --h1 as the load.

Every server gets the same bytes: batch 1 as JSON (`{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32",
"data":[...]}]}`), and 65,536 rows with Triton's binary tensor extension (a JSON header, then the raw
float32 bytes; `Inference-Header-Content-Length` says where the JSON ends; the outputs asked for as binary
too), or the same rows as JSON for a server without that extension (MLServer).

The load generator is h2load (nghttp2-client, C, already used for the gRPC cells) with --h1: one HTTP/1.1
connection per request in flight (-c C -m 1), one thread, the body from a file (-d) and the headers from
-H. Its --log-file writes every request of the measured window with its HTTP status and latency, so each
answer's status is checked (anything but 2xx, or a failed stream, is an error) and p50/p99 come from all
of them (the few answers whose status line h2load read during the warm-up, logged with status 0, are left
out: they straddle the window's start). wrk would need a Lua response() hook for statuses (wrk itself
lumps non-2xx with 3xx) and has no warm-up phase. KServe 0.21 has the binary extension too; MLServer 1.7
does not.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bare_inference import http_answer
from closed_loop import AUTHORIZATION
from procfs import cpu_ns, machine_busy, machine_cores, process_tree
from report import percentile

MODEL_NAME = "mlp_3_4_1"
PATH = f"/v2/models/{MODEL_NAME}/infer"
BINARY_HEADER = "inference-header-content-length"
LARGE = 65536
# (cell, in flight, rows): batch 1 as JSON; 65,536 rows binary where the server has the extension.
CELLS = (("JSON batch 1", 1, 1), ("JSON batch 1", 16, 1), ("JSON batch 1", 64, 1), ("65,536 rows", 1, LARGE))


@dataclass
class Request:
    """One request body and its headers, written to a file for h2load."""

    body: bytes
    headers: dict[str, str]
    encoding: str  # "JSON" or "binary"
    path: Path | None = None


def json_request(x: np.ndarray) -> Request:
    document = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    return Request(_json(document), {"content-type": "application/json"}, "JSON")


def binary_request(x: np.ndarray) -> Request:
    """Triton's binary extension both ways: the input's bytes after the JSON, the outputs asked for as bytes."""
    raw = x.tobytes()
    document = {
        "inputs": [
            {"name": "x", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
        ],
        "parameters": {"binary_data_output": True},
    }
    header = _json(document)
    headers = {"content-type": "application/octet-stream", BINARY_HEADER: str(len(header))}
    return Request(header + raw, headers, "binary")


def json_answer(y: np.ndarray) -> bytes:
    """What forwardpass answers a JSON request with y, byte for byte, for the bare server."""
    return http_answer(MODEL_NAME, "1", {"y": y}, binary=False)[0]


def binary_answer(y: np.ndarray) -> tuple[bytes, int]:
    """What forwardpass answers a binary request with y, and the length of its JSON header."""
    return http_answer(MODEL_NAME, "1", {"y": y}, binary=True)


def _json(document) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def post(port: int, request: Request, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """Send one request to 127.0.0.1:port; its status, headers (lower-case names) and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", PATH, body=request.body, headers=dict([AUTHORIZATION], **request.headers))
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def answer_y(headers: dict[str, str], body: bytes) -> np.ndarray:
    """The output y of an answer, JSON or binary."""
    split = headers.get(BINARY_HEADER)
    document = json.loads(body[: int(split)] if split else body)
    (output,) = [o for o in document["outputs"] if o["name"] == "y"]
    if "data" in output:
        return np.asarray(output["data"], np.float32).reshape(output["shape"])
    return np.frombuffer(body[int(split) :], np.float32).reshape(output["shape"])


def check(port: int, request: Request, want: np.ndarray, name: str) -> None:
    """One request: it must answer 200 with y close to onnxruntime's, or the bench stops."""
    status, headers, body = post(port, request)
    if status != 200:
        raise RuntimeError(f"{name} answers {request.encoding} with HTTP {status}: {body[:300]!r}")
    y = answer_y(headers, body)
    if y.shape != want.shape or not np.allclose(y, want, rtol=1e-5, atol=1e-6):
        raise RuntimeError(f"{name} answers {request.encoding} y {y.ravel()[:4]}, onnxruntime {want.ravel()[:4]}")


def cell(
    port: int, process: subprocess.Popen, request: Request, concurrency: int, warmup: float, seconds: float, log: Path
) -> dict:
    """h2load --h1 with `concurrency` connections for warmup + seconds; the server's and h2load's CPU in the
    measured window, every logged answer's status and latency."""
    found = load(port, process.pid, request, concurrency, warmup, seconds, log)
    latencies = found["latencies_ms"]
    answers = len(latencies)
    server_cpu = found["server_cpu_ns"] / 1e9
    return {
        "concurrency": concurrency,
        "encoding": request.encoding,
        "req_per_s": answers / seconds,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "errors": found["errors"],
        "status_read_in_warmup": found["status_read_in_warmup"],
        "server_cores": server_cpu / seconds,
        "client_cores": found["client_cpu_ns"] / 1e9 / seconds,
        "machine_cores": found["machine_cores"],
        "server_cpu_ms_per_req": server_cpu / answers * 1000 if answers else None,
        "h2load": found["h2load"],
    }


def load(port: int, pid: int, request: Request, concurrency: int, warmup: float, seconds: float, log: Path) -> dict:
    """One h2load --h1 window on the server of process pid: every answer's latency (ms, sorted) and the
    errors, the server's and h2load's CPU (ns) over the measured seconds."""
    if shutil.which("h2load") is None:
        raise SystemExit("the HTTP cells need h2load (Debian's nghttp2-client)")
    command = ["h2load", "--h1", f"http://127.0.0.1:{port}{PATH}", "-d", str(request.path)]
    for name, value in [AUTHORIZATION, *request.headers.items()]:
        command += ["-H", f"{name}: {value}"]
    command += ["-c", str(concurrency), "-m", "1", "-t", "1"]
    command += ["-D", f"{round(seconds * 1000)}ms", "--warm-up-time", f"{round(warmup * 1000)}ms"]
    command += ["--log-file", str(log)]
    load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(warmup)
        tree = process_tree(pid)
        server_before, client_before, busy_before = cpu_ns(tree), cpu_ns([load.pid]), machine_busy()
        time.sleep(seconds)
        server_cpu, client_cpu = cpu_ns(tree) - server_before, cpu_ns([load.pid]) - client_before
        busy_after = machine_busy()
        output, _ = load.communicate(timeout=seconds + 120)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    latencies, errors, unread = [], {}, 0
    if load.returncode != 0:  # counted, and the bench goes on: the report shows it
        print(f"h2load exited with {load.returncode}:\n{output[-2000:]}", file=sys.stderr)
        errors[f"h2load exit {load.returncode}"] = 1
    for line in log.read_text().splitlines() if log.exists() else ():
        _start, status, micros = line.split("\t")[:3]
        if status.startswith("2"):
            latencies.append(int(micros) / 1000)
        elif status == "0":
            # h2load read this answer's status line during the warm-up (it keeps statuses of the measured
            # window only) and logs 0: the request straddled the window's start, so it is left out.
            unread += 1
        else:
            key = "failed stream" if status == "-1" else f"HTTP {status}"
            errors[key] = errors.get(key, 0) + 1
    return {
        "latencies_ms": sorted(latencies),
        "errors": errors,
        "status_read_in_warmup": unread,
        "server_cpu_ns": server_cpu,
        "client_cpu_ns": client_cpu,
        "machine_cores": machine_cores(busy_before, busy_after),
        "h2load": " ".join(command[:1] + command[2:]),
    }
