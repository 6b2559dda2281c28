"""The GRPCInferenceService RPCs: decode the request, ask the repository and model, encode the answer."""

from __future__ import annotations

import logging
import os
import time

import grpc

from forwardpass import __version__
from forwardpass.errors import ForwardpassError, Kind
from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from . import codec
from .control import ModelControl
from .errors import log_event, rpc
from .model import PLATFORM, ServedModel
from .repository import Repository

SERVER_NAME = "forwardpass"
WORKER_METADATA = "forwardpass-worker-pid"
# Only what is served: perf_analyzer calls ModelStatistics around every window when it sees "statistics".
EXTENSIONS = ("model_configuration", "model_repository", "statistics")


class ServerState:
    """Ready once models are loaded, not ready once it stops. Calls that gRPC accepted before the
    stop still run to the end: only readiness changes, so load balancers look elsewhere."""

    def __init__(self) -> None:
        self.loaded = False
        self.stopping = False

    @property
    def ready(self) -> bool:
        return self.loaded and not self.stopping


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Thin RPCs over a Repository; errors map to statuses in `errors.rpc`."""

    def __init__(
        self,
        repository: Repository,
        state: ServerState,
        log_requests: bool = False,
        control: ModelControl | None = None,
    ) -> None:
        self.repository, self.state, self.log_requests, self.control = repository, state, log_requests, control

    def _model(self, name: str, version: str) -> ServedModel:
        if not self.state.loaded:
            raise ForwardpassError("the server is not ready: it is loading models", Kind.UNAVAILABLE)
        return self.repository.get(name, version)

    @rpc
    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @rpc
    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.state.ready)

    @rpc
    def ModelReady(self, request, context):
        entry = self.repository.models.get(request.name)
        ready = entry is not None and entry.ready and (not request.version or request.version in _versions(entry))
        return pb.ModelReadyResponse(ready=self.state.ready and ready)

    @rpc
    def ServerMetadata(self, request, context):
        context.set_trailing_metadata(((WORKER_METADATA, str(os.getpid())),))  # which worker answered
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    @rpc
    def ModelMetadata(self, request, context):
        model = self._model(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=_versions(self.repository.entry(model.name)),
            platform=PLATFORM,
            inputs=[codec.tensor_metadata(model.input)],
            outputs=[codec.tensor_metadata(t) for t in model.outputs],
        )

    @rpc
    def ModelInfer(self, request, context):
        start = time.perf_counter_ns()
        model = self._model(request.model_name, request.model_version)
        try:
            x, rows = codec.decode_input(request, model)
            names = codec.requested_outputs(request, model)
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:  # waited out its deadline in the queue: skip it
                raise ForwardpassError("the call's deadline passed before it was computed", Kind.DEADLINE)
            decoded = time.perf_counter_ns()
            outputs = model.infer(x, rows, names)
            computed = time.perf_counter_ns()
            response = codec.encode_response(request, model, outputs)
        except Exception:
            model.stats.record_failure(time.perf_counter_ns() - start)
            raise
        done = time.perf_counter_ns()
        model.stats.record_success(rows, decoded - start, computed - decoded, done - computed)
        if self.log_requests:
            log_event(
                logging.INFO,
                "request",
                model=model.name,
                version=str(model.version),
                rows=rows,
                id=request.id,
                status="OK",
                us=(done - start) // 1000,
            )
        return response

    @rpc
    def ModelConfig(self, request, context):
        return pb.ModelConfigResponse(config=self._model(request.name, request.version).config)

    @rpc
    def ModelStatistics(self, request, context):
        names = [request.name] if request.name else sorted(self.repository.models)
        models: list[ServedModel] = []
        for name in names:
            entry = self.repository.entry(name)
            if request.version:
                models.append(self.repository.get(name, request.version))
            elif entry.ready:
                models.extend(entry.versions[v] for v in sorted(entry.versions))
        return pb.ModelStatisticsResponse(model_stats=[_statistics(m) for m in models])

    @rpc
    def RepositoryModelLoad(self, request, context):
        self.control.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @rpc
    def RepositoryModelUnload(self, request, context):
        self.control.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    @rpc
    def RepositoryIndex(self, request, context):
        rows = []
        for name, entry in sorted(self.repository.models.items()):
            if entry.ready:
                rows += [
                    pb.RepositoryIndexResponse.ModelIndex(name=name, version=v, state="READY") for v in _versions(entry)
                ]
            elif not request.ready:
                rows.append(pb.RepositoryIndexResponse.ModelIndex(name=name, state="UNAVAILABLE", reason=entry.reason))
        return pb.RepositoryIndexResponse(models=rows)


def _versions(entry) -> list[str]:
    return [str(v) for v in sorted(entry.versions)]


def _statistics(model: ServedModel) -> pb.ModelStatistics:
    s = model.stats.snapshot()

    def duration(d):
        return pb.StatisticDuration(count=d.count, ns=d.ns)

    return pb.ModelStatistics(
        name=model.name,
        version=str(model.version),
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=duration(s.success),
            fail=duration(s.fail),
            queue=duration(s.queue),
            compute_input=duration(s.compute_input),
            compute_infer=duration(s.compute_infer),
            compute_output=duration(s.compute_output),
        ),
    )


def add_to_server(servicer: InferenceServicer, server: grpc.Server) -> None:
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
