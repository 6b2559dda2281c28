"""Servers on loopback for the benchmarks: the request they all answer, `forwardpass serve`'s command
line, and starting a server command on a free port until it answers."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import peers
from closed_loop import AUTHORIZATION, METHOD, TOKEN

from forwardpass.protos import grpc_service_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent


def request_array(rows: int) -> np.ndarray:
    """The input x of `rows` rows that every request of the benchmarks carries, the same each run."""
    return np.random.default_rng(rows).standard_normal((rows, 3)).astype(np.float32)


def request_bytes(rows: int) -> bytes:
    """A ModelInferRequest of `rows` rows for mlp_3_4_1, encoded once for every server alike."""
    x = request_array(rows)
    request = pb.ModelInferRequest(model_name="mlp_3_4_1")
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    return request.SerializeToString()


def response_bytes(rows: int) -> bytes:
    """What forwardpass answers for `rows` rows, for the bare server to echo: same sizes on the wire."""
    response = pb.ModelInferResponse(model_name="mlp_3_4_1", model_version="1")
    response.outputs.add(name="y", datatype="FP32", shape=[rows, 1])
    response.raw_output_contents.append(np.zeros((rows, 1), np.float32).tobytes())
    return response.SerializeToString()


def forwardpass_command(
    workers: int, repository: Path, http_port: int = 0, token_file: Path | None = None
) -> list[str]:
    """`forwardpass serve` on the CPU with `workers` workers, warnings only; start() adds the gRPC port.
    HTTP/REST on `http_port`, a free port when 0. With `token_file` (written here with TOKEN), guarded as
    in production: every call must carry the token, and metrics are served."""
    serve = [sys.executable, "-m", "forwardpass", "serve", "--provider", "cpu", "--log-level", "warning"]
    command = [*serve, "--workers", str(workers), "--http-port", str(http_port), "--model-repository", str(repository)]
    if token_file is not None:
        token_file.write_text(TOKEN + "\n")
        command += ["--auth-token-file", str(token_file), "--metrics-port", str(peers.free_port())]
    return command


def start(command: list[str], output: int | None = subprocess.DEVNULL) -> tuple[int, subprocess.Popen]:
    """Run a server command with `--port` a free loopback port, in a session of its own so that
    peers.stop ends it with its workers; `output=None` lets it write to this process's own."""
    port = peers.free_port()
    process = subprocess.Popen(
        [*command, "--port", str(port)], cwd=ROOT, stdout=output, stderr=output, start_new_session=True
    )
    return port, process


def serve(
    command: list[str], timeout: float = 120, output: int | None = subprocess.DEVNULL
) -> tuple[int, subprocess.Popen]:
    """start(), then wait until the server answers; it is stopped if it never does."""
    port, process = start(command, output)
    try:
        wait_answering(port, process, timeout)
    except BaseException:
        peers.stop(process)
        raise
    return port, process


def wait_answering(port: int, process: subprocess.Popen, timeout: float) -> None:
    """Send request_bytes(1) until a ModelInfer succeeds; raise if the server exits or time runs out."""
    request = request_bytes(1)
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode} before answering")
            try:
                call(request, timeout=5, metadata=(AUTHORIZATION,))
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


class OtlpSink:
    """An OTLP/HTTP endpoint on loopback that takes every export and answers 200 with an empty
    ExportTraceServiceResponse, as a collector answers: the traced cell pays for making, batching and
    sending its spans, without a collector (the sink runs in the load generator's process)."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/traces"
