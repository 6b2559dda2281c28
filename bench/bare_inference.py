"""The bare inference servers: forwardpass's onnxruntime call behind each front door, and nothing else.

    python bench/bare_inference.py grpc --port P --model models/mlp_3_4_1/1/model.onnx
    python bench/bare_inference.py http --port P --model models/mlp_3_4_1/1/model.onnx

The anchors of the cost-per-request targets (docs/speed.md, "Against the bare inference servers"):
what a request costs with none of what the server adds around the call. Each is one process on the
stack of forwardpass's door, with the same session (forwardpass.runtime.Runtime on one onnxruntime
thread, as `forwardpass serve` makes it, so batches of 4,096 rows or more run through its
columns-inside session) and the same malloc thresholds (server/memory.py); and no routing, model
lookup, checks of the request against the model, statistics, limits, token, deadlines, health,
handler threads or access log. A request the model cannot take fails however it fails.

  * grpc: grpc.aio on a uvloop loop, as server/app.py builds it; ModelInfer only, the first input
    read from raw_input_contents with its shape, every output answered as raw bytes (server/codec.py's
    answer), computed on the loop.
  * http: uvicorn with httptools and uvloop around a raw ASGI app; every POST is an inference (any
    other method answers 200, for readiness):
    V2 JSON, or Triton's binary extension for the one input (Inference-Header-Content-Length), answered
    as forwardpass answers (server/restcodec.py): JSON, or the outputs' bytes after the JSON header where
    the request's binary_data_output asks for them.

Both print "serving on HOST:PORT" once bound, and stop on SIGTERM. The model's name and version are
its file's folders (models/NAME/VERSION/model.onnx).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np
import orjson

from forwardpass.dtypes import BY_NUMPY

BINARY_HEADER = b"inference-header-content-length"
JSON_HEADERS = [(b"content-type", b"application/json")]


def http_answer(model: str, version: str, outputs: dict[str, np.ndarray], binary: bool) -> tuple[bytes, int | None]:
    """An inference's HTTP body as forwardpass writes it, and its JSON header's length where the outputs'
    bytes follow it (else None): orjson writes float32 in its shortest exact form."""
    entries, blobs = [], []
    for name, y in outputs.items():
        entry = {"name": name, "datatype": BY_NUMPY[y.dtype].datatype, "shape": list(y.shape)}
        if binary:
            blob = memoryview(np.ascontiguousarray(y)).cast("B")  # joined below: one copy, as forwardpass's
            entry["parameters"] = {"binary_data_size": blob.nbytes}
            blobs.append(blob)
        else:
            entry["data"] = y.reshape(-1)
        entries.append(entry)
    header = orjson.dumps(
        {"model_name": model, "model_version": version, "outputs": entries}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    return (b"".join([header, *blobs]), len(header)) if binary else (header, None)


def http_request(body: bytes, headers: list[tuple[bytes, bytes]], dtype: np.dtype) -> tuple[np.ndarray, bool]:
    """The one input of a V2 JSON body, or of one with the binary extension, and whether the answer goes binary."""
    split = next((int(value) for key, value in headers if key == BINARY_HEADER), None)
    document = orjson.loads(body if split is None else memoryview(body)[:split])
    (tensor,) = document["inputs"]
    if split is None:
        x = np.asarray(tensor["data"], dtype).reshape(tensor["shape"])
    else:
        x = np.frombuffer(body, dtype, offset=split).reshape(tensor["shape"])
    return x, bool(document.get("parameters", {}).get("binary_data_output", False))


def session(model: Path):
    """The session `forwardpass serve` makes for this file on the CPU, with glibc's thresholds as a worker sets them."""
    from forwardpass.builder.readback import read_file
    from forwardpass.runtime import Runtime
    from forwardpass.server.memory import keep_freed_memory, kept_bytes

    keep_freed_memory(*kept_bytes(1))
    return Runtime(model, provider="cpu", threads=1, read_back=read_file(model))


async def run_grpc(port: int, model: Path) -> None:
    """ModelInfer on grpc.aio: raw bytes in, the session's call, raw bytes out."""
    from stacks import serve_model_infer

    await serve_model_infer(grpc_infer(model), port)


def grpc_infer(model: Path):
    """The ModelInfer handler, `infer(request, context)`: the first input read from raw_input_contents,
    every output answered as raw bytes."""
    from forwardpass.dtypes import BY_ONNXRUNTIME
    from forwardpass.protos import grpc_service_pb2 as pb

    runtime = session(model)
    name, version, names = model.parent.parent.name, model.parent.name, runtime.output_names
    datatypes = {o.name: BY_ONNXRUNTIME[o.type].datatype for o in runtime.session.get_outputs()}

    def grpc_answer(request: pb.ModelInferRequest, outputs: dict[str, np.ndarray]) -> pb.ModelInferResponse:
        response = pb.ModelInferResponse(model_name=name, model_version=version, id=request.id)
        for output, y in outputs.items():
            response.outputs.add(name=output, datatype=datatypes[output], shape=y.shape)
            response.raw_output_contents.append(y.tobytes())
        return response

    async def infer(request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        x = np.frombuffer(request.raw_input_contents[0], runtime.dtype).reshape(tuple(request.inputs[0].shape))
        return grpc_answer(request, runtime.run_trusted(x, names))

    return infer


def http_app(model: Path):
    """The raw ASGI app: every POST an inference, JSON or binary."""
    runtime = session(model)
    name, version, names = model.parent.parent.name, model.parent.name, runtime.output_names

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":  # readiness (GET /v2/models/NAME/ready), as the bench waits for it
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        x, binary = http_request(body, scope["headers"], runtime.dtype)
        answer, length = http_answer(name, version, runtime.run_trusted(x, names), binary)
        headers = JSON_HEADERS
        if length is not None:
            headers = [(b"content-type", b"application/octet-stream"), (BINARY_HEADER, str(length).encode())]
        headers = [*headers, (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def run_http(port: int, model: Path) -> None:
    """The app on forwardpass's HTTP stack."""
    from stacks import serve_asgi

    serve_asgi(http_app(model), port)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("door", choices=["grpc", "http"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True, help="models/NAME/VERSION/model.onnx")
    args = parser.parse_args()
    if args.door == "http":
        run_http(args.port, args.model)
    else:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the loop server/app.py runs gRPC on
            runner.run(run_grpc(args.port, args.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
