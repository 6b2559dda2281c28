"""The GRPCInferenceService RPCs: each converts the message (server/codec.py), asks the data plane,
and converts the answer back; `errors.rpc` maps a failure to its status."""

from __future__ import annotations

import os

import grpc

from forwardpass.protos import grpc_service_pb2 as pb
from forwardpass.protos import grpc_service_pb2_grpc as pb_grpc

from . import codec
from .dataplane import DataPlane
from .errors import rpc

WORKER_METADATA = "forwardpass-worker-pid"


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Thin RPCs over a DataPlane."""

    def __init__(self, plane: DataPlane, max_answer: int | None = None) -> None:
        self.plane, self.max_answer = plane, max_answer  # --max-message-mb: larger answers are not computed

    @rpc
    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=self.plane.live())

    @rpc
    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.plane.ready())

    @rpc
    def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self.plane.model_ready(request.name, request.version))

    @rpc
    def ServerMetadata(self, request, context):
        context.set_trailing_metadata(((WORKER_METADATA, str(os.getpid())),))  # which worker answered
        name, version, extensions = self.plane.server_metadata()
        return pb.ServerMetadataResponse(name=name, version=version, extensions=extensions)

    @rpc
    def ModelMetadata(self, request, context):
        return codec.model_metadata(self.plane.model_metadata(request.name, request.version))

    @rpc
    def ModelInfer(self, request, context):
        plain = codec.infer_request(request, context.time_remaining(), self.max_answer)
        return codec.infer_response(self.plane.infer(plain))

    @rpc
    def ModelConfig(self, request, context):
        return pb.ModelConfigResponse(config=self.plane.model_config(request.name, request.version))

    @rpc
    def ModelStatistics(self, request, context):
        return codec.model_statistics(self.plane.model_statistics(request.name, request.version))

    @rpc
    def RepositoryModelLoad(self, request, context):
        self.plane.load(request.model_name, codec.parameters(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @rpc
    def RepositoryModelUnload(self, request, context):
        self.plane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    @rpc
    def RepositoryIndex(self, request, context):
        return codec.repository_index(self.plane.repository_index(request.ready))


def add_to_server(servicer: InferenceServicer, server: grpc.Server) -> None:
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
