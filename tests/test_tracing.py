"""Tracing (--trace-otlp): a real server sends its spans over OTLP/HTTP to a receiver of the test's own, an
HTTP server on 127.0.0.1 that decodes each export (ExportTraceServiceRequest) with opentelemetry-proto, as a
collector would. Requests come over both doors from real clients (grpc's stub, http.client), some carrying
a W3C traceparent."""

from __future__ import annotations

import gzip
import http.client
import http.server
import json
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from forwardpass.errors import InputError
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc
from forwardpass.server.options import ServeOptions

import harness
from harness import ROOT, ServerProcess

ROWS = 2
PHASES = ("decode", "queue", "compute", "encode")  # in the order they run; queue only where a model batches
SERVER_SPAN = {"grpc": "inference.GRPCInferenceService/ModelInfer", "http": "POST /v2/models/{model_name}/infer"}
WAIT = 30.0  # seconds for a span to arrive: the server exports in the background, every 50 ms here


@dataclass(frozen=True)
class Span:
    """A span as the receiver decoded it, ids in hex as traceparent writes them."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start: int
    end: int
    error: bool
    attributes: dict


class Receiver:
    """An OTLP/HTTP trace receiver: every POSTed ExportTraceServiceRequest, decoded, its spans kept."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.posts: list[tuple[str, str]] = []  # (path, content type) of each export
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.take(ExportTraceServiceRequest.FromString(body))
                receiver.posts.append((self.path, self.headers.get("Content-Type", "")))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1/traces"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def take(self, export: ExportTraceServiceRequest) -> None:
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(_span(s) for s in scope.spans)

    def server_spans(self, count: int, prefix: str) -> list[Span]:
        """The SERVER spans of requests whose id starts with prefix, once there are at least count of them."""
        deadline = time.monotonic() + WAIT
        while True:
            found = [s for s in list(self.spans) if s.kind == OtlpSpan.SPAN_KIND_SERVER and _id(s).startswith(prefix)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def children(self, parent: Span, count: int) -> list[Span]:
        """The spans whose parent is parent, in the order they started, once there are count of them."""
        deadline = time.monotonic() + WAIT
        while True:
            found = [s for s in list(self.spans) if s.parent_id == parent.span_id and s.trace_id == parent.trace_id]
            if len(found) >= count or time.monotonic() > deadline:
                return sorted(found, key=lambda s: s.start)
            time.sleep(0.05)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def _span(span: OtlpSpan) -> Span:
    attributes = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}
    return Span(span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), span.name, span.kind,
                span.start_time_unix_nano, span.end_time_unix_nano, span.status.code == Status.STATUS_CODE_ERROR,
                attributes)  # fmt: skip


def _id(span: Span) -> str:
    return span.attributes.get("triton.request_id", "")


def traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """A caller's trace id and span id, and the traceparent that carries them."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def infer(server: ServerProcess, door: str, model: str, id: str, header: str | None = None) -> str:
    """One inference of ROWS rows over a door, with the traceparent header (or metadata) if given; its status."""
    x = np.ones((ROWS, 3), np.float32)
    if door == "grpc":
        request = pb.ModelInferRequest(model_name=model, id=id)
        request.inputs.add(name="x", datatype="FP32", shape=[ROWS, 3])
        request.raw_input_contents.append(x.tobytes())
        with grpc.insecure_channel(server.url) as channel:
            try:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                    request, timeout=30, metadata=(("traceparent", header),) if header else None
                )
                return "OK"
            except grpc.RpcError as exc:
                return exc.code().name
    document = {"id": id, "inputs": [{"name": "x", "shape": [ROWS, 3], "datatype": "FP32", "data": x.ravel().tolist()}]}
    connection = http.client.HTTPConnection(server.http_url.removeprefix("http://"), timeout=30)
    try:
        headers = {"Content-Type": "application/json", **({"traceparent": header} if header else {})}
        connection.request("POST", f"/v2/models/{model}/infer", json.dumps(document).encode(), headers)
        response = connection.getresponse()
        response.read()
        return str(response.status)
    finally:
        connection.close()


def server_has_tracing() -> bool:
    """Whether the server under test has the extra forwardpass[trace]. make test's server venv is the runtime
    set, '.[cpu]', without it: the traced servers then run from this venv, whose test extra pulls it in."""
    if not harness.SERVER:
        return True
    python = Path(harness.SERVER).parent / "python"
    code = "import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http.trace_exporter"
    return subprocess.run([str(python), "-c", code], capture_output=True, cwd=python.parent).returncode == 0


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """The committed models, and `batched`: mlp_3_4_1 with dynamic batching."""
    root = tmp_path_factory.mktemp("tracing") / "models"
    shutil.copytree(ROOT / "models", root)
    shutil.copytree(root / "mlp_3_4_1", root / "batched")
    config = (root / "batched" / "config.pbtxt").read_text().replace('"mlp_3_4_1"', '"batched"')
    (root / "batched" / "config.pbtxt").write_text(config + "dynamic_batching { }\n")
    return root


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def traced_env():
    """Spans sent every 50 ms (the SDK's OTEL_BSP_SCHEDULE_DELAY), from a server that has the extra."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        if not server_has_tracing():
            patch.setattr(harness, "SERVER", None)
            patch.setattr(harness, "SERVER_COMMAND", [sys.executable, "-m", "forwardpass"])
        yield


@pytest.fixture(scope="module")
def traced(traced_env, repository, receiver):
    server = ServerProcess(repository, "--workers", "1", "--log-requests", "--trace-otlp", receiver.url)
    yield server
    server.stop()


@pytest.mark.parametrize("model", ["mlp_3_4_1", "batched"])
@pytest.mark.parametrize("door", ["grpc", "http"])
def test_a_request_continues_the_callers_trace_with_a_span_per_phase(traced, receiver, door, model):
    trace_id, caller, header = traceparent()
    id = f"phases-{door}-{model}"
    assert infer(traced, door, model, id, header) == ("OK" if door == "grpc" else "200")

    [server] = receiver.server_spans(1, id)
    assert (server.trace_id, server.parent_id, server.name) == (trace_id, caller, SERVER_SPAN[door])
    assert not server.error
    assert {k: server.attributes[k] for k in ("triton.model_name", "triton.model_version", "forwardpass.rows")} == {
        "triton.model_name": model,
        "triton.model_version": 1,  # a number, as Triton's
        "forwardpass.rows": ROWS,
    }
    if door == "grpc":
        assert server.attributes["rpc.system"] == "grpc" and server.attributes["rpc.grpc.status_code"] == 0
    else:
        assert server.attributes["http.response.status_code"] == 200
        assert server.attributes["http.route"] == "/v2/models/{model_name}/infer"

    phases = [p for p in PHASES if p != "queue" or model == "batched"]
    children = receiver.children(server, len(phases))
    assert [c.name for c in children] == phases
    for before, after in zip(children, children[1:]):  # one after the other, all on the server's clock
        assert before.start <= before.end <= after.start, (before, after)

    # The access line of the request carries its trace id.
    lines = [json.loads(line.split(": ", 1)[1]) for line in traced.lines if f'"id": "{id}"' in line]
    assert [line["trace_id"] for line in lines if line["event"] == "request"] == [trace_id]


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_a_failed_request_is_traced_with_its_status(traced, receiver, door):
    id = f"failed-{door}"
    assert infer(traced, door, "nope", id, traceparent()[2]) in ("NOT_FOUND", "404")
    [server] = receiver.server_spans(1, id)
    status = "rpc.grpc.status_code" if door == "grpc" else "http.response.status_code"
    assert server.attributes[status] == (grpc.StatusCode.NOT_FOUND.value[0] if door == "grpc" else 404)
    assert not server.error  # a caller's mistake is no server error (OpenTelemetry's conventions)
    assert server.attributes["triton.model_name"] == "nope"
    assert "compute" not in [c.name for c in receiver.children(server, 0)]


def test_the_rate_traces_every_rth_and_a_sampled_traceparent_always(traced_env, repository, receiver, monkeypatch):
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # nothing goes out on its own: the stop must send it
    server = ServerProcess(repository, "--workers", "1", "--trace-otlp", receiver.url, "--trace-rate", "3")
    try:
        unsampled_id, _, unsampled = traceparent(sampled=False)
        for n in range(1, 10):  # both doors by turns; the 6th carries an unsampled traceparent
            door = "grpc" if n % 2 else "http"
            assert infer(server, door, "mlp_3_4_1", f"rate-{n}", unsampled if n == 6 else None) in ("OK", "200")
            if n in (1, 4):  # sampled: traced, and not counted
                sampled_id, _, sampled = traceparent()
                assert infer(server, door, "mlp_3_4_1", f"rate-s{n}", sampled) in ("OK", "200")
    finally:
        assert server.stop() == 0  # and the worker sends what it has not sent yet
    spans = {_id(s): s for s in receiver.spans if s.kind == OtlpSpan.SPAN_KIND_SERVER and _id(s).startswith("rate-")}
    assert sorted(spans) == ["rate-3", "rate-6", "rate-9", "rate-s1", "rate-s4"]
    assert spans["rate-6"].trace_id == unsampled_id  # traced by the count, it still continues the caller's trace
    assert spans["rate-s4"].trace_id == sampled_id
    assert all(path == "/v1/traces" and kind == "application/x-protobuf" for path, kind in receiver.posts)


def test_without_the_extra_the_flag_fails_at_start_naming_it(repository):
    # OpenTelemetry hidden from the interpreter, as in a venv without the extra: the CLI runs as usual.
    code = "import sys; sys.modules['opentelemetry'] = None; from forwardpass.cli import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", code, "serve", "--model-repository", str(repository), "--grpc-port", "0",
         "--http-port", "0", "--trace-otlp", "http://127.0.0.1:4318/v1/traces"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "pip install 'forwardpass[trace]'" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"trace_rate": 0}, "--trace-rate must be 1"),
        ({"trace_rate": 10}, "--trace-rate applies to --trace-otlp"),
        ({"trace_otlp": "127.0.0.1:4318"}, "is no URL"),
    ],
)
def test_tracing_flags_are_checked(flags, message):
    with pytest.raises(InputError, match=message):
        ServeOptions(**flags)
