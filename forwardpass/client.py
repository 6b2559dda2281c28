"""A small client for forwardpass (or any Open Inference Protocol server): health, metadata, infer.

    from forwardpass.client import Client
    with Client("127.0.0.1:8001") as client:
        y = client.infer("mlp_3_4_1", x)           # x: float32 array of shape (batch, 3)

A batch larger than the message limit is split into several requests along its batch axis and the
answers are joined. Server errors come back as ForwardpassError with the status's kind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import grpc
import numpy as np

from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from .credentials import read_pem
from .dtypes import BY_DATATYPE
from .errors import ForwardpassError, Kind

DEFAULT_URL = "127.0.0.1:8001"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 2**20  # the server's default limit
ENVELOPE_BYTES = 64 * 1024  # room for the message around the raw bytes
KIND_OF = {
    grpc.StatusCode.UNAUTHENTICATED: Kind.BAD_INPUT,
    grpc.StatusCode.INVALID_ARGUMENT: Kind.BAD_INPUT,
    grpc.StatusCode.NOT_FOUND: Kind.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE: Kind.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Kind.TOO_LARGE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Kind.DEADLINE,
    grpc.StatusCode.UNIMPLEMENTED: Kind.UNSUPPORTED,
}


class Client:
    """One channel to a server; thread-safe, as gRPC channels are."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        timeout: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: bool = False,
        tls_ca: str | os.PathLike | None = None,
        tls_cert: str | os.PathLike | None = None,
        tls_key: str | os.PathLike | None = None,
        token: str | None = None,
    ):
        """TLS when asked or when any TLS file is given (system roots without tls_ca); tls_cert and
        tls_key for mutual TLS; token as `authorization: Bearer <token>` on every call."""
        self.url, self.timeout, self.max_message_bytes = url, timeout, max_message_bytes
        limits = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if tls or tls_ca or tls_cert or tls_key:
            credentials = grpc.ssl_channel_credentials(read_pem(tls_ca), read_pem(tls_key), read_pem(tls_cert))
            self.channel = grpc.secure_channel(url, credentials, options=limits)
        else:
            self.channel = grpc.insecure_channel(url, options=limits)
        self._auth = (("authorization", f"Bearer {token}"),) if token else None
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def live(self) -> bool:
        return self._call("ServerLive", pb.ServerLiveRequest()).live

    def ready(self) -> bool:
        return self._call("ServerReady", pb.ServerReadyRequest()).ready

    def model_ready(self, model: str, version: str = "") -> bool:
        return self._call("ModelReady", pb.ModelReadyRequest(name=model, version=version)).ready

    def metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        return self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version))

    def infer(
        self, model: str, x: np.ndarray, version: str = "", outputs: Sequence[str] | None = None
    ) -> np.ndarray | dict[str, np.ndarray]:
        """The model's answer for x: one array, or a dict when several outputs are named."""
        meta = self.metadata(model, version)
        (tensor,) = meta.inputs
        dtype = BY_DATATYPE[tensor.datatype].numpy
        x = np.ascontiguousarray(x, dtype=dtype)
        axis = list(tensor.shape).index(-1) if -1 in tensor.shape else 0
        per_row = max(1, x.nbytes // max(1, x.shape[axis])) if x.ndim else x.nbytes
        rows = max(1, (self.max_message_bytes - ENVELOPE_BYTES) // per_row)
        pieces = [self._infer_once(model, version, tensor, chunk, outputs) for chunk in _split(x, axis, rows)]
        names = list(pieces[0])
        joined = {name: np.concatenate([p[name] for p in pieces], axis=axis) for name in names}
        return joined if outputs and len(outputs) > 1 else joined[names[0]]

    def _infer_once(self, model: str, version: str, tensor, x: np.ndarray, outputs: Sequence[str] | None) -> dict:
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
            if code == grpc.StatusCode.UNAVAILABLE and "connect" in (exc.details() or "").lower():
                raise ForwardpassError(f"cannot reach {self.url}: {exc.details()}", Kind.UNAVAILABLE) from None
            kind = KIND_OF.get(code, Kind.UNAVAILABLE)
            raise ForwardpassError(f"{method} failed with {code.name}: {exc.details()}", kind) from None


def _split(x: np.ndarray, axis: int, rows: int) -> list[np.ndarray]:
    count = x.shape[axis] if x.ndim else 1
    if count <= rows:
        return [x]
    return [np.ascontiguousarray(part) for part in np.array_split(x, math.ceil(count / rows), axis=axis)]
