"""TLS credentials and bearer-token authentication for the gRPC server.

With a token, every RPC needs `authorization: Bearer <token>` metadata but the overall health
check (service "" or the inference service's name), which probes call without one; per-model health
needs it, since it tells which model names exist. Reflection needs it too, since it shows the API.
The comparison takes constant time, and the token is never logged or echoed. The token is checked on
a call's headers: a call without it is refused before its message is read, or ever sent.

The services are registered as generic handlers only (`GenericOnly`), and the token is checked where
grpc.aio looks a call's method up, with no interceptor: an interceptor is a chain of coroutines
awaited on every call, and each registered method is one more future that grpc.aio's server
(grpcio 1.85) waits on for every call (asyncio.wait over all of them, re-armed after each).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from forwardpass.credentials import BearerToken, read_pem

REFUSAL = "missing or wrong 'authorization: Bearer <token>' metadata"


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None) -> grpc.ServerCredentials:
    """TLS for the server; with a client CA, mutual TLS: clients must show a certificate it signed."""
    ca = read_pem(client_ca)
    return grpc.ssl_server_credentials(
        [(read_pem(key), read_pem(cert))], root_certificates=ca, require_client_auth=ca is not None
    )


class TokenGuard(grpc.GenericRpcHandler):
    """A service's handlers that answer only with the right bearer token; without it, UNAUTHENTICATED."""

    def __init__(self, handlers: grpc.GenericRpcHandler, token: str) -> None:
        self._handlers, self._token = handlers, BearerToken(token)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._handlers.service(handler_call_details)
        if handler is None or carries_token(handler_call_details.invocation_metadata, self._token):
            return handler
        return _refusal(handler)


class GenericOnly:
    """Stands for the server where a service registers itself (its generated add_*_to_server): its
    generic handlers go on, behind the token when there is one; its registered methods do not (see
    above: each would cost every call a future to wait on, and the generic handler answers them all)."""

    def __init__(self, server: grpc.aio.Server, token: str | None) -> None:
        self._server, self._token = server, token

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        if self._token:
            handlers = tuple(TokenGuard(handler, self._token) for handler in handlers)
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        """Left out: the generic handlers registered beside them answer the same methods."""


def carries_token(metadata, token: BearerToken) -> bool:
    """Whether call metadata holds `authorization: Bearer <token>`, compared in constant time; of
    several authorization entries, the last (as a dict of the metadata would keep)."""
    authorization = ""
    for key, value in metadata or ():
        if key == "authorization":
            authorization = value
    return token.carried_by(authorization)


class GuardedHealth(health_aio.HealthServicer):
    """grpc.health.v1 (asyncio) that answers the overall services to anyone and per-model health
    only with the token (when there is one)."""

    def __init__(self, token: str | None, open_services: Collection[str]) -> None:
        super().__init__()
        self._token, self._open = BearerToken(token) if token else None, frozenset(open_services)

    async def Check(self, request, context) -> health_pb2.HealthCheckResponse:  # noqa: N802 - the gRPC method name
        await self._guard(request, context)
        return await super().Check(request, context)

    async def Watch(self, request, context) -> None:  # noqa: N802 - the gRPC method name
        await self._guard(request, context)
        await super().Watch(request, context)

    async def _guard(self, request, context) -> None:
        if self._token and request.service not in self._open:
            if not carries_token(context.invocation_metadata(), self._token):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler that answers UNAUTHENTICATED on the headers alone. As a client-streaming handler it
    reads no message (a unary one would wait for it first): the client sees the same status."""

    async def refuse(requests, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)

    return grpc.stream_unary_rpc_method_handler(refuse, handler.request_deserializer, handler.response_serializer)
