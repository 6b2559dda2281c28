"""The infer call as a FastAPI route taking the raw Request, as KServe's V2 REST endpoint does (the binary
extension needs the body's bytes)."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from v2 import BINARY_HEADER, infer_binary, infer_json

app = FastAPI()


@app.post("/v2/models/{model_name}/infer")
async def infer(model_name: str, request: Request) -> Response:
    body = await request.body()
    split = request.headers.get(BINARY_HEADER)
    if split is None:
        return Response(infer_json(body, model_name), media_type="application/json")
    answer, length = infer_binary(body, int(split), model_name)
    return Response(answer, media_type="application/octet-stream", headers={BINARY_HEADER: str(length)})
