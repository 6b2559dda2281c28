"""`forwardpass serve` with the bare inference server's handlers in place of its own.

    python bench/bare_in_worker.py serve --workers 1 --model-repository models ...   (serve's options)

The worker as deployed, around the bare inference server's work on each request (bench/bare_inference.py):
the supervisor and its worker process, the HTTP door's thread and header deadline and limit
(server/httpd.py), the gRPC door's loop thread, handler threads, token check (where a call's method is
looked up), health, reflection and metrics all stay; the HTTP app and the ModelInfer handler are the
bare server's, on the committed 3-4-1 model. The bare HTTP app checks no token.

bench/request_profile.py runs it between forwardpass and the bare inference server: what separates it
from the bare server is the worker around the handlers, and what separates forwardpass from it is
forwardpass's own work on each request (routing, the token on HTTP, reading under limits, converting,
checking against the model, statistics).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bare_inference  # noqa: E402

from forwardpass.cli import main  # noqa: E402
from forwardpass.server import httpd, servicer  # noqa: E402

MODEL = ROOT / "models" / "mlp_3_4_1" / "1" / "model.onnx"


def install(model: Path = MODEL) -> None:
    """Swap the handlers as each worker makes its doors: after the fork, so each session is the worker's own."""
    make_http, make_servicer = httpd.HttpServer.__init__, servicer.InferenceServicer.__init__

    def http_server(self, app, sock, options) -> None:
        make_http(self, app, sock, options)
        bare = bare_inference.http_app(model)
        bare.draining, bare.in_flight = False, 0  # what HttpServer.stop reads of its app
        self.server.config.app = bare

    def inference_servicer(self, *args, **kwargs) -> None:
        make_servicer(self, *args, **kwargs)
        self.ModelInfer = bare_inference.grpc_infer(model)  # add_to_server looks it up on the instance

    httpd.HttpServer.__init__ = http_server
    servicer.InferenceServicer.__init__ = inference_servicer
    servicer.SIZED = ""  # the bare handler takes the message itself, not with its length (errors.Received)
    servicer.SERIALIZED = ""  # and answers with a message, which protobuf serializes


if __name__ == "__main__":
    install()
    raise SystemExit(main())
