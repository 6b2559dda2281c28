"""TLS credentials and bearer-token authentication for the gRPC server.

With a token, every RPC but health needs `authorization: Bearer <token>` metadata; reflection
needs it too, since it shows the API. The comparison takes constant time, and the token is never
logged or echoed.
"""

from __future__ import annotations

import hmac
from pathlib import Path

import grpc

from forwardpass.credentials import read_pem

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)  # probes (Kubernetes, load balancers) carry no token
REFUSAL = "missing or wrong 'authorization: Bearer <token>' metadata"


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None) -> grpc.ServerCredentials:
    """TLS for the server; with a client CA, mutual TLS: clients must show a certificate it signed."""
    ca = read_pem(client_ca)
    return grpc.ssl_server_credentials(
        [(read_pem(key), read_pem(cert))], root_certificates=ca, require_client_auth=ca is not None
    )


class TokenAuth(grpc.ServerInterceptor):
    """Lets a call through only with the right bearer token (health checks need none)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler
        supplied = dict(handler_call_details.invocation_metadata).get("authorization", "")
        if hmac.compare_digest(supplied.encode(), self._expected):
            return handler
        return _refusal(handler)


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind that answers UNAUTHENTICATED without running the real one."""

    def refuse(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)

    kinds = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
    )
    make = next(make for behaviour, make in kinds if behaviour is not None)
    return make(refuse, handler.request_deserializer, handler.response_serializer)
