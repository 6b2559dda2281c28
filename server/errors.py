"""ForwardpassError kinds as gRPC status codes, in one decorator around every (asyncio) RPC but
ModelInfer, which calls the decorator's `failed` itself.

Request-content errors are INVALID_ARGUMENT (Triton's choice), an unknown model or version is
NOT_FOUND (KServe's and MLServer's choice), a model that is not ready is UNAVAILABLE. A bug is
logged with its traceback and answered INTERNAL, never left to surface as UNKNOWN.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import NoReturn

import grpc

from forwardpass.errors import ForwardpassError, Kind

from .dataplane import log_failure

log = logging.getLogger(__name__)

STATUS = {
    Kind.BAD_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    Kind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Kind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Kind.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Kind.DEADLINE: grpc.StatusCode.DEADLINE_EXCEEDED,
    Kind.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,  # Triton's UNSUPPORTED, e.g. a load in the wrong mode
}


class Undecodable:
    """What `parsing` hands an RPC for a message that does not parse as its request."""

    def __init__(self, what: str, exc: Exception) -> None:
        self.reason = f"the message is no {what}: {exc}"


class Received:
    """A message and the bytes it took on the wire (`parsing(..., sized=True)`): every value in it
    took at least one of them, so they bound what converting it costs before it is looked at."""

    __slots__ = ("message", "wire_bytes")

    def __init__(self, message, wire_bytes: int) -> None:
        self.message, self.wire_bytes = message, wire_bytes


def parsing(message: type, sized: bool = False) -> Callable[[bytes], object]:
    """A request deserializer that never raises: grpc.aio would answer UNKNOWN; `rpc` answers
    INVALID_ARGUMENT (the sync server's INTERNAL blamed itself). With `sized`, the message comes as
    Received, with its length on the wire."""

    def parse(data: bytes):
        try:
            parsed = message.FromString(data)
        except Exception as exc:  # protobuf's DecodeError
            return Undecodable(message.__name__, exc)
        return Received(parsed, len(data)) if sized else parsed

    return parse


def rpc(method: Callable) -> Callable:
    """Wrap an async servicer method: a ForwardpassError becomes its status and message."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        try:
            return await method(self, request, context)
        except Exception as exc:
            await failed(context, method.__name__, request, exc)

    return wrapper


async def failed(context: grpc.aio.ServicerContext, call: str, request, exc: Exception) -> NoReturn:
    """End an RPC that raised: a ForwardpassError with its status and message, anything else (a bug:
    keep serving, say so, log the traceback) INTERNAL. `rpc` calls it, and so does an RPC that does
    its own wrapping (servicer.ModelInfer)."""
    if isinstance(exc, ForwardpassError):
        message = message_of(request)
        model = getattr(message, "model_name", None) or getattr(message, "name", "")
        log_failure(call, model, exc)  # an error the codec raised, before the data plane
        await context.abort(STATUS[exc.kind], str(exc))
    log.error("%s failed", call, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {call}: {type(exc).__name__}: {exc}")


def message_of(request):
    """The message an RPC was handed, Received or not."""
    return request.message if isinstance(request, Received) else request
