"""Serve an ONNX model through KServe's Python model server (kserve.ModelServer), V2 REST, on 127.0.0.1 only.

A small ``kserve.Model`` subclass runs onnxruntime on the file, as a KServe user writes a custom predictor
(KServe's own ONNX support is Triton behind its controller, not this server). Run with the python of the
KServe venv (see ``bench.peers.start_kserve``):

    python kserve_server.py --onnx model.onnx --http-port 8080

REST only (KServe's gRPC server is off), one uvicorn worker (KServe's default), no per-request log lines
(KServe logs each request's latency and uvicorn's access line by default: a benchmark compares servers,
not their logging). KServe reads its own flags from ``sys.argv`` when imported, so this script's flags
are named apart from them. Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn

HOST = "127.0.0.1"
MODEL_NAME = "mlp_3_4_1"


class _LoopbackConfig(uvicorn.Config):
    """uvicorn's Config on 127.0.0.1: KServe's REST server binds 0.0.0.0 and has no option for it."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["host"] = HOST
        super().__init__(*args, **kwargs)


uvicorn.Config = _LoopbackConfig  # before kserve imports it

import kserve  # noqa: E402  (after the patch above)
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402
from kserve.errors import InvalidInput  # noqa: E402
from kserve.utils.utils import generate_uuid  # noqa: E402


class OnnxModel(kserve.Model):
    """Serves an ONNX model with one input ``x`` and one output ``y`` over the V2 protocol."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the same engine settings as the other peers
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        """Run the model on the request's ``x``; the answer is binary where the request asks for it."""
        x = payload.get_input_by_name("x")
        if x is None:
            raise InvalidInput(f"expected an input named 'x', got {[i.name for i in payload.inputs]}")
        (y,) = self.session.run(["y"], {"x": np.asarray(x.as_numpy(), dtype=np.float32)})
        return InferResponse(
            response_id=payload.id or generate_uuid(),  # KServe's answer needs an id; as its own examples do
            model_name=self.name,
            infer_outputs=[InferOutput(name="y", shape=list(y.shape), datatype="FP32", data=y)],
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True, help="the ONNX file (input x [N,3], output y [N,1])")
    parser.add_argument("--http-port", type=int, required=True)
    args, _ = parser.parse_known_args()
    server = kserve.ModelServer(
        http_port=args.http_port, workers=1, enable_grpc=False, enable_latency_logging=False, grace_period=5
    )
    logging.getLogger("uvicorn.access").disabled = True
    server.start([OnnxModel(MODEL_NAME, args.onnx)])


if __name__ == "__main__":
    main()
