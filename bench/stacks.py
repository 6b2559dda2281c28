"""Servers the benchmark measures beside `forwardpass serve`, on the same methods and bytes.

    python bench/stacks.py bare --port P --response resp.bin [--workers N]
        the gRPC ceiling: the same stack and message sizes, no decoding, no inference: it answers
        every ModelInfer with the same pre-encoded response
    python bench/stacks.py aio --port P --model-repository models
        forwardpass's own handler (decode, onnxruntime, encode) on a grpc.aio server, to weigh
        the sync server forwardpass uses against asyncio
    python bench/stacks.py bare-http --port P --response resp.json --binary-response resp.bin \
            --binary-json-length N
        the HTTP ceiling: forwardpass's HTTP stack (uvicorn, httptools, uvloop, a raw ASGI app) in one
        process, no routing, no decoding, no inference: it reads each request's body and answers the
        same bytes forwardpass would, the binary answer (JSON header of N bytes, then the tensor)
        to requests that carry Inference-Header-Content-Length, the JSON one to the others

All print "serving on HOST:PORT" once bound, and stop on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

BINARY_HEADER = b"inference-header-content-length"

SERVICE = "inference.GRPCInferenceService"
LIMITS = [("grpc.max_receive_message_length", 64 * 2**20), ("grpc.max_send_message_length", 64 * 2**20)]


def bare_sync(port: int, response: bytes, workers: int) -> None:
    """N forked processes, each a sync server with 8 threads (its answer takes no interpreter lock back)."""
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            server = grpc.server(ThreadPoolExecutor(max_workers=8), options=LIMITS)
            handler = grpc.unary_unary_rpc_method_handler(lambda request, context: response)
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler}),))
            server.add_insecure_port(f"127.0.0.1:{port}")
            server.start()
            _wait_for_sigterm()
            server.stop(1).wait()
            os._exit(0)
        children.append(pid)
    print(f"serving on 127.0.0.1:{port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(pid, signal.SIGTERM) for pid in children])
    for pid in children:
        os.waitpid(pid, 0)


def _wait_for_sigterm() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


async def ours_aio(port: int, repository: Path) -> None:
    """forwardpass's codec and data plane, unchanged, in an asyncio handler."""
    from forwardpass.server import codec
    from forwardpass.server.dataplane import DataPlane
    from forwardpass.server.repository import Repository

    models = Repository(repository, provider="cpu", threads=1)
    models.load()
    plane = DataPlane(models)
    plane.loaded = True

    async def infer(request, context):
        return codec.infer_response(plane.infer(codec.infer_request(request, codec.deadline(context.time_remaining()))))

    await serve_model_infer(infer, port, serialized=True)


async def serve_model_infer(infer, port: int, serialized: bool = False) -> None:
    """A grpc.aio server whose one method is ModelInfer, answered by `infer(request, context)` with
    the request parsed by protobuf, and the answer serialized by it unless `infer` answers with bytes
    (`serialized`); until SIGTERM."""
    from forwardpass.protos import grpc_service_pb2 as pb

    server = grpc.aio.server(options=LIMITS)
    handler = grpc.unary_unary_rpc_method_handler(
        infer,
        request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=None if serialized else pb.ModelInferResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler}),))
    await serve_aio(server, port)


def bare_http(port: int, response: bytes, binary: bytes, json_length: int) -> None:
    """uvicorn with httptools and uvloop, as forwardpass's HTTP door, around an app that only answers."""
    answers = {
        False: [(b"content-type", b"application/json"), (b"content-length", str(len(response)).encode())],
        True: [
            (b"content-type", b"application/octet-stream"),
            (BINARY_HEADER, str(json_length).encode()),
            (b"content-length", str(len(binary)).encode()),
        ],
    }
    bodies = {False: response, True: binary}

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:  # the whole body, as a server must before it answers
            more = (await receive()).get("more_body", False)
        kind = any(name == BINARY_HEADER for name, _ in scope["headers"])
        await send({"type": "http.response.start", "status": 200, "headers": answers[kind]})
        await send({"type": "http.response.body", "body": bodies[kind]})

    serve_asgi(app, port)


def serve_asgi(app, port: int) -> None:
    """An ASGI app on uvicorn with httptools and uvloop, forwardpass's HTTP stack without its protocol's
    header deadline and size limit, on a socket bound as the server binds its own; until SIGTERM."""
    import uvicorn

    from forwardpass.server.httpd import bind

    config = uvicorn.Config(
        app,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        server_header=False,
        log_level="warning",
    )
    sock = bind("127.0.0.1", port)
    print(f"serving on 127.0.0.1:{port}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])  # stops on SIGTERM


async def serve_aio(server: grpc.aio.Server, port: int) -> None:
    """Bind and start a grpc.aio server, then serve until SIGTERM."""
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"serving on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["bare", "aio", "bare-http"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--response", type=Path, help="bare: the pre-encoded ModelInferResponse; bare-http: JSON")
    parser.add_argument("--binary-response", type=Path, help="bare-http: the answer to binary requests")
    parser.add_argument("--binary-json-length", type=int, help="bare-http: the length of its JSON header")
    parser.add_argument("--workers", type=int, default=1, help="bare: processes")
    parser.add_argument("--model-repository", type=Path, help="aio: the models to serve")
    args = parser.parse_args()
    if args.kind == "bare-http":
        bare_http(args.port, args.response.read_bytes(), args.binary_response.read_bytes(), args.binary_json_length)
    elif args.kind == "bare":
        bare_sync(args.port, args.response.read_bytes(), args.workers)
    else:
        asyncio.run(ours_aio(args.port, args.model_repository))
    return 0


if __name__ == "__main__":
    sys.exit(main())
