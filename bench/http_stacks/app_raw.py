"""A raw ASGI app, no framework, as forwardpass's HTTP door is (server/rest.py), reduced to the infer call.

Two apps, the same but for the JSON library:

    app_raw:app           the stdlib's json module
    app_raw:app_orjson    orjson
"""

from __future__ import annotations

from v2 import BINARY_HEADER, ORJSON, STDLIB, Codec, infer_binary, infer_json, model_name

_HEADER = BINARY_HEADER.encode()


def make_app(codec: Codec):
    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        model = model_name(scope["path"])
        if model is None or scope["method"] != "POST":
            await _answer(send, 404, b'{"error":"not found"}', [(b"content-type", b"application/json")])
            return
        body = await _body(receive)
        split = next((int(value) for name, value in scope["headers"] if name == _HEADER), None)
        if split is None:
            await _answer(send, 200, infer_json(body, model, codec), [(b"content-type", b"application/json")])
        else:
            answer, length = infer_binary(body, split, model, codec)
            headers = [(b"content-type", b"application/octet-stream"), (_HEADER, str(length).encode())]
            await _answer(send, 200, answer, headers)

    return app


async def _body(receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def _answer(send, status: int, body: bytes, headers: list) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    """Servers that run the lifespan protocol (granian does) get it acknowledged."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


app = make_app(STDLIB)
app_orjson = make_app(ORJSON)
