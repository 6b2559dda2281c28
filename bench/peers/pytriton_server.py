"""Serve an ONNX model through PyTriton (CPU), on 127.0.0.1 only: a Python model behind Triton's front end.

The Triton server PyTriton bundles calls a Python function here; Triton's onnxruntime backend plays no part.

Run with the python of the PyTriton venv (see ``bench.peers.start_pytriton``):

    python pytriton_server.py --model model.onnx --grpc-port 8001 --http-port 8000 --metrics-port 8002

Triton's dynamic batcher (no queue delay) merges requests up to ``--max-batch-size`` rows; the
infer function runs onnxruntime, one intra-op thread, on each merged batch. Runs until SIGTERM or
SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

HOST = "127.0.0.1"
MODEL_NAME = "mlp_3_4_1"


def make_infer(model: Path) -> Callable[..., dict[str, np.ndarray]]:
    """The infer function: a one-thread onnxruntime session on ``model``, mapping ``x`` to ``y``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the same engine settings as the other peers
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    @batch  # Triton hands over a list of requests; @batch stacks them into one array per input
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        (y,) = session.run(["y"], {"x": x})
        return {"y": y}

    return infer


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into the KeyboardInterrupt on which ``Triton.serve`` returns and cleans up."""
    raise KeyboardInterrupt


def main() -> None:
    """Parse the arguments, bind the model and serve until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the ONNX file (input x [N,3], output y [N,1])")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=65536)
    parser.add_argument("--workspace", type=Path, default=None, help="PyTriton's sockets and model store")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _raise_interrupt)

    config = TritonConfig(
        grpc_address=HOST,
        grpc_port=args.grpc_port,
        http_address=HOST,
        http_port=args.http_port,
        metrics_address=HOST,
        metrics_port=args.metrics_port,
    )
    # SIGTERM may come at any point, start-up included: catch it around everything, and let the
    # with block (when entered) stop Triton and its proxy processes.
    try:
        with Triton(config=config, workspace=args.workspace) as triton:
            triton.bind(
                model_name=MODEL_NAME,
                infer_func=make_infer(args.model),
                inputs=[Tensor(name="x", dtype=np.float32, shape=(3,))],
                outputs=[Tensor(name="y", dtype=np.float32, shape=(1,))],
                config=ModelConfig(
                    max_batch_size=args.max_batch_size,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=0),
                ),
                strict=True,  # check the infer function's outputs against the declared y
            )
            triton.serve()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
