"""The GRPCInferenceService RPCs on the worker's asyncio gRPC server: each converts the message
(server/codec.py), asks the data plane, and converts the answer back; `errors.failed` maps a failure
to its status.

A call waiting for its message holds no thread: the loop receives it. What answers from memory
(health, metadata, config, statistics, the index, a small inference to a model that does not batch)
runs on the loop, as the HTTP door's does; what computes or may wait (a large inference, one that
waits for its batch, a load or unload) runs on the worker's handler threads, so the loop keeps
answering. With --log-requests, each RPC is registered wrapped to write its access-log line; with
--trace-otlp, ModelInfer is wrapped to trace the calls it should (server/tracing.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Callable
from concurrent.futures import Executor

import grpc

from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from . import codec
from .dataplane import ACCESS, INLINE_BYTES, Access, DataPlane, runs_inline, waits
from .errors import Received, Undecodable, failed, message_of, parsing, rpc
from .model import ServedModel
from .security import GenericOnly
from .tracing import TRACE, Tracer

WORKER_METADATA = "forwardpass-worker-pid"
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
TRACED = "ModelInfer"  # only inferences are traced, as in Triton
SIZED = "ModelInfer"  # the RPC handed its message's length on the wire with it (errors.Received)
SERIALIZED = "ModelInfer"  # the RPC that answers with its message's bytes (codec.infer_response writes them)
CONVERTED_VALUE_BYTES = 8  # the widest fixed-size value of a contents field (fp64, int64, uint64)
# The codes OpenTelemetry's semantic conventions make a gRPC server span's error; the others are the caller's.
SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Thin RPCs over a DataPlane; `threads` runs the calls that compute or wait."""

    def __init__(
        self, plane: DataPlane, threads: Executor, max_answer: int | None = None, tracer: Tracer | None = None
    ) -> None:
        self.plane, self.threads = plane, threads
        self.max_answer = max_answer  # --max-message-mb: larger answers are not computed
        self.tracer = tracer  # --trace-otlp

    async def _on_thread(self, function, *args):
        # In this call's context, as asyncio.to_thread runs a function: the data plane finds the
        # call's access record there (--log-requests).
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.threads, context.run, function, *args)

    @rpc
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=self.plane.live())

    @rpc
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.plane.ready())

    @rpc
    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self.plane.model_ready(request.name, request.version))

    @rpc
    async def ServerMetadata(self, request, context):
        context.set_trailing_metadata(((WORKER_METADATA, str(os.getpid())),))  # which worker answered
        name, version, extensions = self.plane.server_metadata()
        return pb.ServerMetadataResponse(name=name, version=version, extensions=extensions)

    @rpc
    async def ModelMetadata(self, request, context):
        return codec.model_metadata(self.plane.model_metadata(request.name, request.version))

    async def ModelInfer(self, received: Received | Undecodable, context):
        # The one RPC not wrapped in `rpc`, for the coroutine that would add to every inference: the
        # same handling, here.
        if isinstance(received, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, received.reason)
        try:
            request = received.message
            deadline_ns = codec.deadline(context.time_remaining())
            # Sized without re-encoding the message (ByteSize() does: 39 µs for 786 KB) and with its raw
            # bytes read once; what a thread would take off the loop is the values converted one by one,
            # counted at the widest a contents value takes on the wire. Each took a byte of the message at
            # least, besides the raw bytes: a message with fewer such bytes than the bound needs no count.
            raw = codec.raw_contents(request)
            raw_bytes, enough = sum(map(len, raw)), INLINE_BYTES // CONVERTED_VALUE_BYTES
            outside = received.wire_bytes - raw_bytes
            converted = outside if outside < enough else codec.converted_values(request, enough)
            model = self.plane.find(request.model_name, request.model_version)
            if runs_inline(CONVERTED_VALUE_BYTES * converted, raw_bytes) and not waits(model):
                return self._infer(request, deadline_ns, raw, model)
            return await self._on_thread(self._infer, request, deadline_ns, raw, model)
        except Exception as exc:
            await failed(context, "ModelInfer", received, exc)

    def _infer(
        self, request: pb.ModelInferRequest, deadline_ns: int | None, raw: list[bytes], model: ServedModel | None
    ) -> bytes:
        trace = TRACE.get() if self.tracer is not None else None
        if trace is not None:
            trace.decoding()
        plain = codec.infer_request(request, deadline_ns, self.max_answer, raw)
        response = codec.infer_response(self.plane.infer(plain, model))
        if trace is not None:
            trace.encoded()
        return response

    @rpc
    async def ModelConfig(self, request, context):
        return pb.ModelConfigResponse(config=self.plane.model_config(request.name, request.version))

    @rpc
    async def ModelStatistics(self, request, context):
        return codec.model_statistics(self.plane.model_statistics(request.name, request.version))

    @rpc
    async def RepositoryModelLoad(self, request, context):
        await self._on_thread(self.plane.load, request.model_name, codec.parameters(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @rpc
    async def RepositoryModelUnload(self, request, context):
        await self._on_thread(self.plane.unload, request.model_name)  # waits for a load in progress
        return pb.RepositoryModelUnloadResponse()

    @rpc
    async def RepositoryIndex(self, request, context):
        return codec.repository_index(self.plane.repository_index(request.ready))


def add_to_server(servicer: InferenceServicer, server: GenericOnly) -> None:
    """The service's RPCs as the generated add_GRPCInferenceServiceServicer_to_server registers them
    (as a generic handler: security.GenericOnly says why), but with a request deserializer that hands a
    message that does not parse to the RPC (errors.parsing)."""

    def serializer(method) -> Callable | None:
        # None: grpc sends the bytes the RPC answers with as they are.
        return None if method.name == SERIALIZED else getattr(pb, method.output_type.name).SerializeToString

    def answer(name: str) -> Callable:
        method = getattr(servicer, name)
        logged, tracer = servicer.plane.log_requests, servicer.tracer if name == TRACED else None
        return _observed(method, name, logged, tracer) if logged or tracer is not None else method

    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            answer(method.name),
            request_deserializer=parsing(getattr(pb, method.input_type.name), sized=method.name == SIZED),
            response_serializer=serializer(method),
        )
        for method in SERVICE.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))


def _observed(answer: Callable, name: str, logged: bool, tracer: Tracer | None) -> Callable:
    """An RPC that writes its access-log line (--log-requests) and ends its trace (--trace-otlp), when
    traced, with the status it ended with; without either flag no RPC is wrapped, so both cost nothing."""

    async def observed(request, context: grpc.aio.ServicerContext):
        access = Access("grpc", name, *_named(request)) if logged else None
        trace = None
        if tracer is not None:
            metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
            trace = tracer.begin(metadata, f"{SERVICE.full_name}/{name}", _rpc_attributes(name), access)
        tokens = ACCESS.set(access), TRACE.set(trace)
        status = "CANCELLED"  # unless it answers or aborts: the client left, or its deadline passed
        try:
            response = await answer(request, context)
            status = "OK"
            return response
        except Exception:  # an abort (errors.failed turns every failure into one): the code it sent
            status = _code_name(context.code())
            raise
        finally:
            ACCESS.reset(tokens[0])
            TRACE.reset(tokens[1])
            if access is not None:
                access.write(status)
            if trace is not None:
                code = grpc.StatusCode[status].value[0]
                trace.end({"rpc.grpc.status_code": code}, status in SERVER_ERRORS, status)

    return observed


def _rpc_attributes(name: str) -> dict[str, str]:
    """A gRPC server span's attributes by OpenTelemetry's semantic conventions."""
    return {"rpc.system": "grpc", "rpc.service": SERVICE.full_name, "rpc.method": name}


def _named(request) -> tuple[str, str, str]:
    """The model, version and id a request message names; empty where its kind has no such field."""
    request = message_of(request)
    model = getattr(request, "model_name", "") or getattr(request, "name", "")
    version = getattr(request, "model_version", "") or getattr(request, "version", "")
    return model, version, getattr(request, "id", "")


def _code_name(code) -> str:
    """A status code's name, whether grpc gives it as a StatusCode or as its number."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
