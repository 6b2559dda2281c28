"""A small client for forwardpass (or any Open Inference Protocol server): health, metadata, infer.

    from forwardpass.client import Client
    with Client("127.0.0.1:8001") as client:           # gRPC
        y = client.infer("mlp_3_4_1", x)           # x: float32 array of shape (batch, 3)
    with Client("http://127.0.0.1:8000") as client:    # HTTP/REST, the same calls
        y = client.infer("mlp_3_4_1", x)

An http:// or https:// URL speaks the V2 REST protocol, with Triton's binary tensor data extension
unless binary=False asks for JSON only; any other URL is a gRPC address. A batch larger than the
message limit is split into several requests along its batch axis and the answers are joined. Server
errors come back as ForwardpassError with the status's kind.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import ssl
import threading
import urllib.parse
from collections.abc import Sequence

import grpc
import numpy as np
from google.protobuf import json_format

from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc
from forwardpass.server.hosts import address
from forwardpass.server.options import DEFAULT_GRPC_ADDRESS, DEFAULTS

from .credentials import read_pem
from .dtypes import BY_DATATYPE
from .errors import ForwardpassError, Kind

ENVELOPE_BYTES = 64 * 1024  # room for the message around the raw bytes
JSON_VALUE_BYTES = 32  # the longest float64 repr (24 characters) and its comma, rounded up
COMPACT = (",", ":")  # json.dumps separators without spaces: a JSON batch is mostly separators and digits
HTTP_SCHEMES = ("http://", "https://")
HEADER_LENGTH = "Inference-Header-Content-Length"
KIND_OF = {
    grpc.StatusCode.UNAUTHENTICATED: Kind.BAD_INPUT,
    grpc.StatusCode.INVALID_ARGUMENT: Kind.BAD_INPUT,
    grpc.StatusCode.NOT_FOUND: Kind.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE: Kind.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Kind.TOO_LARGE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Kind.DEADLINE,
    grpc.StatusCode.UNIMPLEMENTED: Kind.UNSUPPORTED,
}
KIND_OF_HTTP = {
    400: Kind.BAD_INPUT,
    401: Kind.BAD_INPUT,
    404: Kind.NOT_FOUND,
    408: Kind.DEADLINE,
    413: Kind.TOO_LARGE,
    501: Kind.UNSUPPORTED,
    503: Kind.UNAVAILABLE,
    504: Kind.DEADLINE,
}
# Health answers: the protocol reads a 4xx as false, Triton answers 400, KServe 503, and an unknown model 404.
NOT_READY_HTTP = (400, 404, 503)


class WrongProtocol(ForwardpassError):
    """The address answers in the other protocol: a gRPC address at an HTTP/1.x port, or an http://
    URL at a gRPC (HTTP/2) port. `url` is how to reach that port in the protocol it speaks."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message, Kind.BAD_INPUT)
        self.url = url


class Client:
    """One connection to a server: a gRPC channel, or one keep-alive HTTP connection that calls from
    several threads take turns on; thread-safe either way."""

    def __init__(
        self,
        url: str = DEFAULT_GRPC_ADDRESS,
        timeout: float | None = None,
        max_message_bytes: int = DEFAULTS.max_message_bytes,  # the server's default limit
        tls: bool = False,
        tls_ca: str | os.PathLike | None = None,
        tls_cert: str | os.PathLike | None = None,
        tls_key: str | os.PathLike | None = None,
        token: str | None = None,
        binary: bool = True,
    ):
        """TLS when asked or when any TLS file is given (system roots without tls_ca); tls_cert and
        tls_key for mutual TLS; token as `authorization: Bearer <token>` on every call; binary=False
        sends and asks for JSON (HTTP only)."""
        self.url, self.timeout, self.max_message_bytes = url, timeout, max_message_bytes
        tls = tls or any((tls_ca, tls_cert, tls_key))
        if url.startswith(HTTP_SCHEMES):
            self._transport = _Http(url, timeout, tls, tls_ca, tls_cert, tls_key, token, binary)
        elif not binary:
            raise ForwardpassError(f"JSON is an HTTP encoding: give an http:// or https:// URL, not {url}")
        else:
            self._transport = _Grpc(url, timeout, max_message_bytes, tls, tls_ca, tls_cert, tls_key, token)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def live(self) -> bool:
        return self._transport.live()

    def ready(self) -> bool:
        return self._transport.ready()

    def model_ready(self, model: str, version: str = "") -> bool:
        return self._transport.model_ready(model, version)

    def metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        return self._transport.metadata(model, version)

    def infer(
        self, model: str, x: np.ndarray, version: str = "", outputs: Sequence[str] | None = None
    ) -> np.ndarray | dict[str, np.ndarray]:
        """The model's answer for x: one array, or a dict when several outputs are named."""
        meta = self.metadata(model, version)
        (tensor,) = meta.inputs
        dtype = BY_DATATYPE[tensor.datatype].numpy
        x = np.ascontiguousarray(x, dtype=dtype)
        axis = list(tensor.shape).index(-1) if -1 in tensor.shape else 0
        value_bytes = JSON_VALUE_BYTES if self._transport.json else x.itemsize
        per_row = max(1, value_bytes * x.size // max(1, x.shape[axis])) if x.ndim else value_bytes
        rows = max(1, (self.max_message_bytes - ENVELOPE_BYTES) // per_row)
        pieces = [self._transport.infer_once(model, version, tensor, chunk, outputs) for chunk in _split(x, axis, rows)]
        names = list(pieces[0])
        joined = {name: np.concatenate([p[name] for p in pieces], axis=axis) for name in names}
        return joined if outputs and len(outputs) > 1 else joined[names[0]]


class _Grpc:
    """The gRPC transport: one channel, thread-safe as gRPC channels are."""

    json = False

    def __init__(self, url, timeout, max_message_bytes, tls, tls_ca, tls_cert, tls_key, token) -> None:
        self.url, self.timeout, self.tls = url, timeout, tls
        limits = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if tls:
            credentials = grpc.ssl_channel_credentials(read_pem(tls_ca), read_pem(tls_key), read_pem(tls_cert))
            self.channel = grpc.secure_channel(url, credentials, options=limits)
        else:
            self.channel = grpc.insecure_channel(url, options=limits)
        self._auth = (("authorization", f"Bearer {token}"),) if token else None
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def live(self) -> bool:
        return self._call("ServerLive", pb.ServerLiveRequest()).live

    def ready(self) -> bool:
        return self._call("ServerReady", pb.ServerReadyRequest()).ready

    def model_ready(self, model: str, version: str) -> bool:
        return self._call("ModelReady", pb.ModelReadyRequest(name=model, version=version)).ready

    def metadata(self, model: str, version: str) -> pb.ModelMetadataResponse:
        return self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version))

    def infer_once(self, model: str, version: str, tensor, x: np.ndarray, outputs: Sequence[str] | None) -> dict:
        request = pb.ModelInferRequest(model_name=model, model_version=version)
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=x.shape)
        request.raw_input_contents.append(x.tobytes())
        for name in outputs or ():
            request.outputs.add(name=name)
        response = self._call("ModelInfer", request)
        return {
            out.name: np.frombuffer(raw, dtype=BY_DATATYPE[out.datatype].numpy).reshape(tuple(out.shape))
            for out, raw in zip(response.outputs, response.raw_output_contents)
        }

    def _call(self, method: str, request):
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout, metadata=self._auth)
        except grpc.RpcError as exc:
            code = exc.code()
            details = (exc.details() or "").lower()
            # gRPC's words when the port answers HTTP/1.x: "Failed parsing HTTP/2 ... (Trying to connect an
            # http1.x server (HTTP status 400))"; the whole of it is a frame dump no user needs.
            if "http1.x" in details or "failed parsing http/2" in details:
                scheme = "https" if self.tls else "http"
                raise WrongProtocol(
                    f"{self.url} answers HTTP/1.x, not gRPC: it is an HTTP port; use {scheme}://{self.url}",
                    f"{scheme}://{self.url}",
                ) from None
            if code == grpc.StatusCode.UNAVAILABLE and "connect" in details:
                raise ForwardpassError(f"cannot reach {self.url}: {exc.details()}", Kind.UNAVAILABLE) from None
            kind = KIND_OF.get(code, Kind.UNAVAILABLE)
            raise ForwardpassError(f"{method} failed with {code.name}: {exc.details()}", kind) from None


class _Http:
    """The V2 REST transport: one keep-alive connection, which one request at a time uses."""

    def __init__(self, url, timeout, tls, tls_ca, tls_cert, tls_key, token, binary: bool) -> None:
        self.url, self.timeout, self.json = url, timeout, not binary
        parts = urllib.parse.urlsplit(url)
        try:
            self._host, self._port = parts.hostname, parts.port
        except ValueError:
            self._host = None
        if not self._host:
            raise ForwardpassError(f"{url}: expected http://HOST[:PORT] or https://HOST[:PORT]")
        if tls and parts.scheme == "http":
            raise ForwardpassError(f"{url} is plain HTTP: TLS needs an https:// URL")
        self._prefix = parts.path.rstrip("/")
        self._context = _tls_context(tls_ca, tls_cert, tls_key) if parts.scheme == "https" else None
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def live(self) -> bool:
        return self._health("/v2/health/live")

    def ready(self) -> bool:
        return self._health("/v2/health/ready")

    def model_ready(self, model: str, version: str) -> bool:
        return self._health(_model_path(model, version) + "/ready")

    def metadata(self, model: str, version: str) -> pb.ModelMetadataResponse:
        path = _model_path(model, version)
        answer = _parse_json(path, self._call("GET", path)[1])
        try:
            return json_format.ParseDict(answer, pb.ModelMetadataResponse(), ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise ForwardpassError(f"GET {path}: not a model's metadata ({exc})", Kind.UNAVAILABLE) from None

    def infer_once(self, model: str, version: str, tensor, x: np.ndarray, outputs: Sequence[str] | None) -> dict:
        path = _model_path(model, version) + "/infer"
        body, headers = self._encode(tensor, x, outputs)
        response, data = self._call("POST", path, body, headers)
        length = response.getheader(HEADER_LENGTH)
        split = int(length) if length else len(data)
        return _decode(_parse_json(path, data[:split]), data, split)

    def _encode(self, tensor, x: np.ndarray, outputs: Sequence[str] | None) -> tuple[list, dict[str, str]]:
        """The request body, as chunks sent one after another, and its headers."""
        tensor_json = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(x.shape)}
        request: dict = {"inputs": [tensor_json]}
        binary_output = {} if self.json else {"parameters": {"binary_data": True}}
        if outputs:
            request["outputs"] = [{"name": name, **binary_output} for name in outputs]
        if self.json:
            tensor_json["data"] = x.ravel().tolist()
            return [json.dumps(request, separators=COMPACT).encode()], {"Content-Type": "application/json"}
        tensor_json["parameters"] = {"binary_data_size": x.nbytes}
        if not outputs:
            request["parameters"] = {"binary_data_output": True}  # every output, each as bytes
        head = json.dumps(request, separators=COMPACT).encode()
        # The array goes out as it lies in memory: no copy of a batch that may be most of the limit.
        body = [head, memoryview(x.reshape(-1).view(np.uint8))]
        return body, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}

    def _health(self, path: str) -> bool:
        status = self._call("GET", path, ok=(200, *NOT_READY_HTTP))[0].status
        return status == 200

    def _call(self, method: str, path: str, body: list | None = None, headers: dict | None = None, ok=(200,)):
        """The response and its body; any status outside ok raises the server's error."""
        headers = {**self._headers, **(headers or {})}
        if body is not None:
            headers["Content-Length"] = str(sum(len(chunk) for chunk in body))
        with self._lock:
            response, data = self._exchange(method, self._prefix + path, body, headers)
        if response.status not in ok:
            raise _http_error(f"{method} {path}", response.status, response.reason, data)
        return response, data

    def _exchange(self, method: str, target: str, body: list | None, headers: dict) -> tuple:
        """One request and its answer on the kept connection; a broken connection as ForwardpassError."""
        reused = self._connection is not None
        try:
            try:
                return self._send(method, target, body, headers)
            except (ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                # A server may close a keep-alive connection while it idles, and every call here is safe
                # to repeat: one more try on a fresh connection.
                return self._send(method, target, body, headers)
        except TimeoutError:
            raise ForwardpassError(f"{method} {target} timed out after {self.timeout} s", Kind.DEADLINE) from None
        except http.client.BadStatusLine as exc:
            if not exc.line.startswith("\x00"):
                raise ForwardpassError(f"cannot reach {self.url}: {exc!r:.200}", Kind.UNAVAILABLE) from None
            # An HTTP/2 frame (a frame's length starts with a zero byte) where a status line should be: gRPC.
            grpc_address = address(self._host, self._port or (443 if self._context else 80))
            raise WrongProtocol(
                f"{self.url} answers HTTP/2, not HTTP/1.x: it is a gRPC port; use {grpc_address}", grpc_address
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ForwardpassError(f"cannot reach {self.url}: {exc}", Kind.UNAVAILABLE) from None

    def _send(self, method: str, target: str, body: list | None, headers: dict) -> tuple:
        connection = self._connection or self._connect()
        try:
            connection.request(method, target, body, headers)
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            self._drop()  # in an unknown state: the next call starts afresh
            raise
        if response.will_close:
            self._drop()
        return response, data

    def _connect(self) -> http.client.HTTPConnection:
        if self._context is None:
            self._connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        else:
            self._connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._context
            )
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _parse_json(path: str, data: bytes):
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ForwardpassError(f"{path}: the server's answer is not JSON ({exc})", Kind.UNAVAILABLE) from None


def _model_path(model: str, version: str) -> str:
    path = f"/v2/models/{urllib.parse.quote(model, safe='')}"
    return path + f"/versions/{urllib.parse.quote(version, safe='')}" if version else path


def _decode(answer: dict, data: bytes, offset: int) -> dict[str, np.ndarray]:
    """The outputs of an answer: JSON `data`, or bytes after the JSON, in the outputs' order."""
    arrays = {}
    for out in answer["outputs"]:
        dtype = BY_DATATYPE[out["datatype"]].numpy
        size = out.get("parameters", {}).get("binary_data_size")
        if size is None:
            values = np.asarray(out["data"], dtype=dtype)
        else:
            values = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=offset)
            offset += size
        arrays[out["name"]] = values.reshape(out["shape"])
    return arrays


def _http_error(what: str, status: int, reason: str, data: bytes) -> ForwardpassError:
    """The server's `{"error": ...}` message, under its status and our kind of it."""
    try:
        message = json.loads(data)["error"]
    except (ValueError, TypeError, KeyError):
        message = data.decode(errors="replace").strip()[:200] or reason
    # HTTP calls 401 "Unauthorized", but it means the server does not know who is calling.
    reason = "Unauthenticated (a missing or wrong bearer token)" if status == 401 else reason
    kind = KIND_OF_HTTP.get(status, Kind.BAD_INPUT if status < 500 else Kind.UNAVAILABLE)
    return ForwardpassError(f"{what} failed with HTTP {status} {reason}: {message}", kind)


def _tls_context(tls_ca, tls_cert, tls_key) -> ssl.SSLContext:
    """System roots, or only those of tls_ca; a client certificate for mutual TLS."""
    ca = read_pem(tls_ca)
    try:
        context = ssl.create_default_context(cadata=ca.decode() if ca else None)
    except (ssl.SSLError, ValueError) as exc:
        raise ForwardpassError(f"{tls_ca}: not a PEM CA certificate ({exc})") from None
    if tls_cert or tls_key:
        try:
            context.load_cert_chain(tls_cert or tls_key, tls_key)
        except OSError as exc:
            raise ForwardpassError(f"{tls_cert}, {tls_key}: cannot load the client certificate ({exc})") from None
    return context


def _split(x: np.ndarray, axis: int, rows: int) -> list[np.ndarray]:
    count = x.shape[axis] if x.ndim else 1
    if count <= rows:
        return [x]
    return [np.ascontiguousarray(part) for part in np.array_split(x, math.ceil(count / rows), axis=axis)]
