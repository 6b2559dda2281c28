"""The infer call as a Starlette route."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from v2 import BINARY_HEADER, infer_binary, infer_json


async def infer(request: Request) -> Response:
    body = await request.body()
    model = request.path_params["model_name"]
    split = request.headers.get(BINARY_HEADER)
    if split is None:
        return Response(infer_json(body, model), media_type="application/json")
    answer, length = infer_binary(body, int(split), model)
    return Response(answer, media_type="application/octet-stream", headers={BINARY_HEADER: str(length)})


app = Starlette(routes=[Route("/v2/models/{model_name}/infer", infer, methods=["POST"])])
