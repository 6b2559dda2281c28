"""The HTTP API as served, as an OpenAPI 3.1 document: GET /openapi.json, browsed at /docs (the page's).

The document's paths are the app's own route table (server/rest.py's ROUTES, and server/page.py's
when the page is served): each route's pattern becomes a path, and its operation is looked up in
OPERATIONS by that path, a model version left out, so a route nobody described here cannot be
served a document: building it raises KeyError (tests/test_openapi.py builds it). Which statuses
every route may answer besides its own comes from the same places the app decides them: a token
(401), a foreign Origin on a route that hands out weights (403), the in-flight limit (503).

What JSON Schema cannot say about an infer request (that `data` holds as many values as `shape`
multiplies to, that `binary_data_size` values add up to the bytes after the JSON, that each input
is one the model has, with its datatype and a shape it takes) is written in the descriptions, and
checked by the server, which answers 400; the schemas are not loosened to pretend otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson

from forwardpass import __version__
from forwardpass.dtypes import BY_DATATYPE

from .pagenumerics import MAX_EXAMPLES

PATH = "/openapi.json"
VERSION = "3.1.0"
# A path segment captured by a pattern (None) is named for the segment before it.
CAPTURED = {"models": "model_name", "versions": "model_version", "static": "file", "ort": "file", "docs": "file"}
VERSIONED = "/versions/{model_version}"  # a model route and its versioned twin are one operation
JSON = "application/json"
BINARY = "application/octet-stream"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict, required: Iterable[str] = (), closed: bool = True) -> dict:
    """An object schema; closed ones refuse fields the server never writes (answers) or reads (requests)."""
    schema = {"type": "object", "properties": properties, "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


def _answer(description: str, schema: dict | str, media: str = JSON, headers: dict | None = None) -> dict:
    response = {
        "description": description,
        "content": {media: {"schema": _ref(schema) if isinstance(schema, str) else schema}},
    }
    if headers:
        response["headers"] = headers
    return response


STRING, BOOLEAN, INTEGER = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
SHAPE = {"type": "array", "items": INTEGER, "description": "dimensions; -1 for one of any size (the batch)"}
# JSON cannot hold NaN or infinities: answers write them as these strings (protobuf's JSON mapping),
# requests may also hold the bare words, as Python's json module writes them.
NON_FINITE = {"enum": ["NaN", "Infinity", "-Infinity"]}
DATATYPE = {"enum": sorted(BY_DATATYPE), "description": "the Open Inference Protocol's datatype"}
VALUES = {
    "type": "array",
    "description": "row-major values, flat or nested",
    "items": {"anyOf": [{"type": "number"}, {"type": "array"}, NON_FINITE]},
}
NUMBERS = {"type": "array", "items": {"type": "number"}}
WEIGHTS = {  # as GET .../network lists them, item l - 1 for layer l
    "W": {"type": "array", "items": {"type": "array", "items": NUMBERS}, "description": "W[l]: n[l] rows of n[l-1]"},
    "b": {"type": "array", "items": NUMBERS, "description": "b[l]: n[l] numbers"},
}
SCHEMAS = {
    "Error": _object({"error": STRING}, ["error"]),
    "Live": _object({"live": BOOLEAN}, ["live"]),
    "Ready": _object({"ready": BOOLEAN}, ["ready"]),
    "ServerMetadata": _object(
        {"name": STRING, "version": STRING, "extensions": {"type": "array", "items": STRING}},
        ["name", "version", "extensions"],
    ),
    "TensorMetadata": _object({"name": STRING, "datatype": DATATYPE, "shape": SHAPE}, ["name", "datatype", "shape"]),
    "ModelMetadata": _object(
        {
            "name": STRING,
            "versions": {"type": "array", "items": STRING},
            "platform": STRING,
            "inputs": {"type": "array", "items": _ref("TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("TensorMetadata")},
        },
        ["name", "versions", "platform", "inputs", "outputs"],
    ),
    "ModelReady": _object({"name": STRING, "ready": BOOLEAN}, ["name", "ready"]),
    "ModelConfig": {
        **_object({"name": STRING, "platform": STRING, "max_batch_size": INTEGER}, ["name"], closed=False),
        "description": "Triton's ModelConfig (protos/model_config.proto) in protobuf's JSON with the proto's "
        "field names, every field written, 64-bit integers as numbers",
    },
    "ModelStatistics": _object(
        {
            "model_stats": {
                "type": "array",
                "items": _object(
                    {
                        "name": STRING,
                        "version": STRING,
                        "last_inference": {**INTEGER, "description": "ms since the epoch; 0 before the first"},
                        "inference_count": INTEGER,
                        "execution_count": INTEGER,
                        "inference_stats": {
                            "type": "object",
                            "additionalProperties": _object({"count": INTEGER, "ns": INTEGER}, ["count", "ns"]),
                        },
                        "batch_stats": {"type": "array"},
                        "memory_usage": {"type": "array"},
                    },
                    ["name", "version", "inference_count", "execution_count", "inference_stats"],
                ),
            }
        },
        ["model_stats"],
    ),
    "IndexRequest": _object({"ready": {**BOOLEAN, "description": "only the versions ready to serve"}}),
    "RepositoryIndex": {
        "type": "array",
        "items": _object(
            {"name": STRING, "version": STRING, "state": STRING, "reason": STRING}, ["name", "version", "state"]
        ),
    },
    "LoadRequest": _object(
        {"parameters": {"type": "object", "description": "Triton's `config` and `file:` overrides are refused"}},
        closed=False,
    ),
    "Empty": _object({}),
    "InferInput": _object(
        {
            "name": STRING,
            "shape": SHAPE,
            "datatype": STRING,
            "parameters": _object({"binary_data_size": {**INTEGER, "minimum": 0}}, closed=False),
            "data": VALUES,
        },
        ["name", "shape", "datatype"],
        closed=False,
    ),
    "RequestedOutput": _object(
        {"name": STRING, "parameters": _object({"binary_data": BOOLEAN}, closed=False)}, ["name"], closed=False
    ),
    "InferRequest": {
        **_object(
            {
                "id": STRING,
                "parameters": _object(
                    {
                        "binary_data_output": {**BOOLEAN, "description": "every output as binary data"},
                        "timeout": {**INTEGER, "minimum": 0, "description": "microseconds it may take; 0: no limit"},
                    },
                    closed=False,
                ),
                "inputs": {"type": "array", "items": _ref("InferInput")},
                "outputs": {"type": "array", "items": _ref("RequestedOutput"), "description": "all when none"},
            },
            ["inputs"],
            closed=False,
        ),
        "description": "Rules beyond this schema, checked by the server (400): each input is one the model "
        "has, with its datatype, and a shape it takes (a batch up to max_batch_size); `data` holds exactly "
        "as many values as `shape` multiplies to, numbers only (no booleans); an input has `data` or "
        "`parameters.binary_data_size`, and the binary_data_size values add up to the bytes after the JSON "
        "(the Inference-Header-Content-Length header says where it ends).",
    },
    "OutputTensor": _object(
        {
            "name": STRING,
            "datatype": DATATYPE,
            "shape": SHAPE,
            "data": {"type": "array", "items": {"anyOf": [{"type": "number"}, NON_FINITE]}},
            "parameters": _object({"binary_data_size": {**INTEGER, "minimum": 0}}, ["binary_data_size"]),
        },
        ["name", "datatype", "shape"],
    ),
    "InferResponse": _object(
        {
            "model_name": STRING,
            "model_version": STRING,
            "id": STRING,
            "outputs": {"type": "array", "items": _ref("OutputTensor")},
        },
        ["model_name", "model_version", "outputs"],
    ),
    "Network": {
        **_object({"name": STRING, "version": STRING, "layout": STRING, "dtype": STRING}, ["name"], closed=False),
        "description": "the network as the page draws it: layers, tensors, tolerance, weights",
    },
    "OracleRequest": {
        **_object(
            {
                "x": {**NUMBERS, "description": "one example: n[0] numbers"},
                "X": {
                    "type": "array",
                    "items": NUMBERS,
                    "minItems": 1,
                    "maxItems": MAX_EXAMPLES,
                    "description": "a batch of m examples, each n[0] numbers; answered as n[l] x m matrices",
                },
                **WEIGHTS,
            }
        ),
        "description": "`x` or `X`; `W` and `b` both or neither (the served weights). Shapes are the model's (400).",
    },
    "WeightsRequest": {
        **_object(WEIGHTS, ["W", "b"]),
        "description": "the weights, in the model's shapes (400 names the layer and shape that is not)",
    },
    "Oracle": {
        **_object({"layers": {"type": "array"}}, ["layers"], closed=False),
        "description": "the float64 oracle's Z[l], A[l] and their error bounds for x",
    },
    "OpenAPI": {"type": "object", "description": "this document"},
}

# What each error status means here (server/rest.py raises them; Triton's statuses).
ERRORS = {
    400: "bad input: the request, its body, or its path (not percent-encoded UTF-8, or a model name or version no "
    "folder could have)",
    401: "a missing or wrong `Authorization: Bearer <token>` header (--auth-token-file)",
    403: "a foreign Origin may not load or unload models or read weights (--allowed-origins)",
    404: "no such model, version or file",
    408: "the body did not arrive in time (--http-body-timeout, --http-min-body-rate)",
    413: "the body, inflated, is above its limit (--max-message-mb, or the most the model's batch can take)",
    415: "a Content-Encoding other than gzip, deflate or identity",
    421: "a Host that is not this machine's, on a server bound to loopback (--allowed-hosts)",
    431: "the request line and headers are above 64 KiB",
    500: "a bug: the server keeps serving and logs it",
    501: "not supported here (load and unload need --model-control-mode explicit; the page, a network read back)",
    503: "not ready, stopping, or more requests in flight than --max-concurrent-rpcs; retry",
    504: "the request's timeout passed before it was computed",
}
CHALLENGE = {"WWW-Authenticate": {"schema": STRING, "description": "Bearer"}}
ATTACHMENT = {"Content-Disposition": {"schema": STRING, "description": "attachment, named <model>-edited-weights.npz"}}
ERROR_RESPONSES = {
    f"Error{status}": _answer(why, "Error", headers=CHALLENGE if status == 401 else None)
    for status, why in ERRORS.items()
}
EVERY_CALL = (400, 421, 431, 500)  # a path not percent-encoded UTF-8, the Host check, the head's size, a bug
BODY = (400, 408, 413, 415)  # reading and inflating a body
MODEL = (400, 404)  # a model path: its name and version
NETWORK = (*MODEL, 501)  # the page's model routes: a model loaded without its network read back


@dataclass(frozen=True)
class Operation:
    """One route's description: its answers by status, its request body and its own errors."""

    summary: str
    tag: str
    answers: dict[int, dict]
    errors: tuple[int, ...] = ()
    body: dict | None = None
    parameters: tuple[dict, ...] = ()  # header parameters
    probe: bool = False  # a health probe: never counted in flight, so never 503 for that


def _static(*media: str) -> dict[int, dict]:
    """A static file's answers: the file (one of these types), or 304 while the client's copy is current."""
    return {
        200: {"description": "the file", "content": {m: {"schema": STRING} for m in media}},
        304: {"description": "unchanged since the ETag in If-None-Match"},
    }


HEADER_LENGTH = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "schema": {**INTEGER, "minimum": 0},
    "description": "Triton's binary tensor data extension: the body's first this many bytes are the JSON "
    "request, the rest the inputs' bytes in order (`binary_data_size` each); 0: the whole body is the "
    "model's one input, one row of a rows-layout model or whole columns of a columns-layout one",
}
INFER_ANSWER = {
    "description": "the outputs: JSON, or with any output asked for as binary data, the JSON followed by its bytes",
    "content": {
        JSON: {"schema": _ref("InferResponse")},
        BINARY: {
            "schema": {
                **STRING,
                "description": "the InferResponse JSON, whose length the Inference-Header-Content-Length header "
                "gives, then each binary output's little-endian bytes in order (`binary_data_size` each)",
            }
        },
    },
    "headers": {"Inference-Header-Content-Length": {"schema": INTEGER, "description": "with binary outputs only"}},
}
NOT_READY = {"oneOf": [_ref("Ready"), _ref("Error")]}
MODEL_NOT_READY = {"oneOf": [_ref("ModelReady"), _ref("Error")]}
PAGE_JS, PAGE_CSS, PLAIN = "text/javascript; charset=utf-8", "text/css; charset=utf-8", "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"

# Every route's operation, by its path without a model version (server/rest.py and server/page.py route them).
OPERATIONS = {
    "GET /v2/health/live": Operation("Whether the server runs", "health", {200: _answer("live", "Live")}, probe=True),
    "GET /v2/health/ready": Operation(
        "Whether every model is loaded",
        "health",
        {200: _answer("ready", "Ready"), 503: _answer("not ready, or stopping", NOT_READY)},
        probe=True,
    ),
    "GET /v2": Operation(
        "Name, version and protocol extensions", "server", {200: _answer("metadata", "ServerMetadata")}
    ),
    "GET /v2/models/stats": Operation(
        "Every model's statistics", "models", {200: _answer("statistics", "ModelStatistics")}
    ),
    "GET /v2/models/{model_name}": Operation(
        "A model's inputs, outputs and versions", "models", {200: _answer("metadata", "ModelMetadata")}, MODEL
    ),
    "GET /v2/models/{model_name}/ready": Operation(
        "Whether a model (version) is loaded",
        "models",
        {200: _answer("ready", "ModelReady"), 503: _answer("not ready, or stopping", MODEL_NOT_READY)},
        (400,),
    ),
    "GET /v2/models/{model_name}/config": Operation(
        "A model's config as Triton writes it", "models", {200: _answer("config", "ModelConfig")}, MODEL
    ),
    "GET /v2/models/{model_name}/stats": Operation(
        "A model's statistics", "models", {200: _answer("statistics", "ModelStatistics")}, MODEL
    ),
    "POST /v2/models/{model_name}/infer": Operation(
        "Compute a model's outputs",
        "inference",
        {200: INFER_ANSWER},
        (*BODY, 404, 501, 504),
        {
            "required": True,
            "content": {
                JSON: {"schema": _ref("InferRequest")},
                BINARY: {
                    "schema": {
                        **STRING,
                        "description": "with Inference-Header-Content-Length: the InferRequest JSON, then the bytes",
                    }
                },
            },
        },
        (HEADER_LENGTH,),
    ),
    "POST /v2/repository/index": Operation(
        "Every model version and its state",
        "repository",
        {200: _answer("the index", "RepositoryIndex")},
        BODY,
        {"content": {JSON: {"schema": _ref("IndexRequest")}}},
    ),
    "POST /v2/repository/models/{model_name}/load": Operation(
        "Load (or reload) a model folder",
        "repository",
        {200: _answer("loaded", "Empty")},
        (*BODY, 404, 501),
        {"content": {JSON: {"schema": _ref("LoadRequest")}}},
    ),
    "POST /v2/repository/models/{model_name}/unload": Operation(
        "Stop serving a model", "repository", {200: _answer("unloaded", "Empty")}, (*BODY, 404, 501)
    ),
    "GET /openapi.json": Operation("This document", "docs", {200: _answer("the OpenAPI document", "OpenAPI")}),
    # The page (--page): its files, and what it asks about a model.
    "GET /": Operation("The page: the network drawn and computed in the browser", "page", _static(HTML)),
    "GET /static/{file}": Operation("One of the page's files", "page", _static(HTML, PAGE_JS, PAGE_CSS), (404,)),
    "GET /static/ort/{file}": Operation(
        "One of onnxruntime-web's files", "page", _static(PAGE_JS, "application/wasm", PLAIN), (404,)
    ),
    "GET /v2/models/{model_name}/network": Operation(
        "The network, described and drawn", "page", {200: _answer("the network", "Network")}, NETWORK
    ),
    "GET /v2/models/{model_name}/network/model.onnx": Operation(
        "The network with every Z[l] and A[l] as outputs",
        "page",
        {200: _answer("the ONNX file", STRING, BINARY)},
        NETWORK,
    ),
    "GET /v2/models/{model_name}/network/editable.onnx": Operation(
        "That network with W1, b1, ... as inputs",
        "page",
        {200: _answer("the ONNX file", STRING, BINARY)},
        NETWORK,
    ),
    "POST /v2/models/{model_name}/network/oracle": Operation(
        "The float64 oracle for one x or a batch X, for the served or the given weights",
        "page",
        {200: _answer("Z[l], A[l] and their bounds", "Oracle")},
        (*BODY, 404, 501),
        {"content": {JSON: {"schema": _ref("OracleRequest")}}},
    ),
    "POST /v2/models/{model_name}/network/weights.npz": Operation(
        "The given weights as the .npz `forwardpass build --weights` reads",
        "page",
        {200: _answer("the .npz: W1, b1, ... in the slides' shapes", STRING, BINARY, ATTACHMENT)},
        (*BODY, 404, 501),
        {"required": True, "content": {JSON: {"schema": _ref("WeightsRequest")}}},
    ),
    "GET /docs": Operation("This document, browsable (Swagger UI)", "docs", _static(HTML)),
    "GET /static/docs/{file}": Operation(
        "One of the docs page's files", "docs", _static(PAGE_JS, PAGE_CSS, PLAIN), (404,)
    ),
}


def path_of(pattern: tuple) -> str:
    """A route's pattern as an OpenAPI path: ("v2", "models", None) -> /v2/models/{model_name}."""
    return "/" + "/".join(s if s is not None else "{" + CAPTURED[p] + "}" for p, s in zip(("",) + pattern, pattern))


def document(routes: list, needs_token: Callable[[str], bool], origin_checked: frozenset) -> dict:
    """The OpenAPI document of these routes (method tuples, patterns, handlers), as the app serves them:
    `needs_token(path)` says where a bearer token is asked for, `origin_checked` which handlers refuse a
    foreign Origin."""
    paths: dict[str, dict] = {}
    for methods, pattern, handler in routes:
        path = path_of(pattern)
        for method in methods:
            key = f"{method} {path.replace(VERSIONED, '')}"
            operation = OPERATIONS[key]  # a KeyError here is a route nobody described
            identifier = re.sub(r"[^a-z0-9]+", "_", f"{method} {path}".lower()).strip("_")  # unique, as paths are
            paths.setdefault(path, {})[method.lower()] = _operation(
                operation, identifier, path, needs_token(path), handler in origin_checked
            )
    guarded = any("security" in op for ops in paths.values() for op in ops.values())
    components: dict = {"schemas": SCHEMAS, "responses": ERROR_RESPONSES}
    if guarded:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": VERSION,
        "info": {
            "title": "forwardpass",
            "version": __version__,
            "description": "The Open Inference Protocol (KServe V2) over HTTP, with Triton's binary tensor data "
            "extension and model repository routes, as this server serves it. Every error is "
            '`{"error": "<message>"}` as application/json.',
        },
        "paths": paths,
        "components": components,
    }


def _operation(operation: Operation, identifier: str, path: str, guarded: bool, origin: bool) -> dict:
    errors = set(operation.errors) | set(EVERY_CALL)
    errors |= {401} if guarded else set()
    errors |= {403} if origin else set()
    errors |= set() if operation.probe else {503}
    responses = {str(s): a for s, a in operation.answers.items()}
    for status in sorted(errors):
        responses.setdefault(str(status), {"$ref": f"#/components/responses/Error{status}"})
    described = {
        "operationId": identifier,
        "summary": operation.summary,
        "tags": [operation.tag],
        "parameters": [*_path_parameters(path), *operation.parameters],
        "responses": dict(sorted(responses.items())),
    }
    if operation.body is not None:
        described["requestBody"] = operation.body
    if guarded:
        described["security"] = [{"bearer": []}]
    return described


def _path_parameters(path: str) -> list[dict]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [{"name": name, "in": "path", "required": True, "schema": STRING} for name in names]


async def serve(app, call) -> tuple[int, list, bytes]:
    """GET /openapi.json: the document of the routes this app serves, built once."""
    if app.openapi is None:
        app.openapi = orjson.dumps(document(app.routes, app.needs_token, app.origin_checked))
    return 200, [(b"content-type", b"application/json")], app.openapi


ROUTES = [(("GET",), ("openapi.json",), serve)]
