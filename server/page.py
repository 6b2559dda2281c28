"""The page on the HTTP port: `/` and its static files, the routes it asks about a model, and
/docs, which browses the OpenAPI document (server/openapi.py) with Swagger UI.

`/`, `/docs` and `/static/...` hold no model data and need no token, so a browser can load the page and
then ask for the token once; every /v2 path, the page's routes included, needs it (RestApp checks).
The network routes hand out a model's weights: a foreign Origin gets 403 there (RestApp checks).
Their bodies are small JSON (RestApp's SMALL_BODY, 1 MiB), checked against the model's shapes.
The page's own routes, beside the V2 ones for each model version:

    GET  /v2/models/{m}[/versions/{v}]/network                the network described and drawn, W and b (JSON)
    GET  /v2/models/{m}[/versions/{v}]/network/model.onnx     the same network with every Z[l], A[l] as outputs
    GET  /v2/models/{m}[/versions/{v}]/network/editable.onnx  that one with W1, b1, ... as inputs
    POST /v2/models/{m}[/versions/{v}]/network/oracle         {"x": [...]} or {"X": [[...], ...]}, and
                                                              optionally "W", "b": the float64 oracle and bounds
    POST /v2/models/{m}[/versions/{v}]/network/weights.npz    {"W": ..., "b": ...}: the .npz `build --weights` reads

Every page response carries a Content-Security-Policy that allows only this origin (and
'wasm-unsafe-eval' for onnxruntime-web's wasm): no CDN, no inline script, no model name run as code.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from urllib.parse import quote

import orjson

from forwardpass.web import DOCS, FOLDER, LICENSE, ORT_FILES, PAGE_FILES, SWAGGER, how_to_get, ort_folder

from . import restcodec
from .dataplane import DataPlane
from .pagenumerics import NetworkViews
from .rest import Call, RestApp, _model, _model_routes, _optional_json

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; style-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".wasm": "application/wasm",  # WebAssembly.instantiateStreaming insists on it
}
# /docs runs no wasm; Swagger UI's stylesheet draws its icons as data: SVG images.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PLAIN = "text/plain; charset=utf-8"  # the licence
COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),  # revalidate: a new forwardpass must not meet an old page.js
]
PAGE_HEADERS = [(b"content-security-policy", CSP.encode()), *COMMON_HEADERS]
DOCS_HEADERS = [(b"content-security-policy", DOCS_CSP.encode()), *COMMON_HEADERS]
BINARY = [(b"content-type", b"application/octet-stream"), (b"cache-control", b"no-store")]
DOCS_FILES = ("index.html", "docs.js")  # ours, committed; Swagger UI's files are fetched (SWAGGER)


class Page:
    """The page's files and its model routes, over one data plane."""

    def __init__(self, plane: DataPlane, ort_dir: Path | None = None, swagger_dir: Path | None = None) -> None:
        self.network = NetworkViews(plane)
        self.ort = ort_folder(ort_dir)
        self.files = {name: FOLDER / name for name in PAGE_FILES}
        # Each file read once and kept as one immutable bytes object, which every request's answer
        # sends from (RestApp sends it in chunks as the client reads): 40 requests for the 14 MB
        # wasm hold it once, not 40 times. Keyed by its ETag, so a changed file is read again.
        self.contents: dict[str, tuple[str, bytes]] = {}
        self.routes = ROUTES
        self.origin_checked = WEIGHTS  # a foreign Origin may not read them (RestApp checks)
        if self.ort is None:
            given = f"--ort-web-dir {ort_dir} does not hold {', '.join(ORT_FILES)}: " if ort_dir is not None else ""
            log.warning("%s%s; the page shows the server's answers only", given, how_to_get())
        else:
            self.files |= {f"ort/{name}": self.ort / name for name in ORT_FILES}
            # npm's own dist folder (--ort-web-dir) has no licence file: ours is the same text
            licence = self.ort / LICENSE
            self.files[f"ort/{LICENSE}"] = licence if licence.is_file() else FOLDER / "onnxruntime-web.LICENSE"
        self.files |= {f"docs/{name}": DOCS / name for name in DOCS_FILES}
        swagger = ort_folder(swagger_dir, SWAGGER)
        if swagger is None:
            log.info("Swagger UI is not installed for /docs (forwardpass web-runtime); it shows how to get it")
        else:
            self.files |= {f"docs/{name}": swagger / name for name in (*SWAGGER.files, LICENSE)}

    @staticmethod
    def public(path: str) -> bool:
        """Whether a path is the page, /docs or one of their files, which need no token."""
        return path in ("/", "/docs") or path.startswith("/static/")


Answer = tuple[int, list, bytes]  # status, headers, body: what every route returns


async def _file(page: Page, name: str, call: Call) -> Answer:
    path = page.files.get(name)
    if path is None or not path.is_file():
        missing = name.startswith("ort/") and name.removeprefix("ort/") in ORT_FILES
        message = how_to_get() if missing else f"no such file: /static/{name}"
        return 404, [(b"content-type", b"application/json")], orjson.dumps({"error": message})
    # A browser revalidates (no-cache) and gets 304 while the file is unchanged: the 14 MB wasm
    # crosses a classroom's network once, not on every visit.
    stat = path.stat()
    etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
    headers = [
        (b"content-type", CONTENT_TYPES.get(path.suffix, PLAIN).encode()),
        (b"etag", etag.encode()),
        *(DOCS_HEADERS if name.startswith("docs/") else PAGE_HEADERS),
    ]
    if call.headers.get("if-none-match") == etag:
        return 304, headers, b""
    kept = page.contents.get(name)
    if kept is None or kept[0] != etag:
        kept = page.contents[name] = etag, await asyncio.to_thread(path.read_bytes)  # 14 MB: not on the loop
    return 200, headers, kept[1]


async def index(app: RestApp, call: Call) -> Answer:
    """The page itself."""
    return await _file(app.page, "index.html", call)


async def static(app: RestApp, call: Call) -> Answer:
    """One of the page's own files."""
    return await _file(app.page, call.segments[0], call)


async def ort_file(app: RestApp, call: Call) -> Answer:
    """One of onnxruntime-web's files, or how to get them."""
    return await _file(app.page, f"ort/{call.segments[0]}", call)


async def docs(app: RestApp, call: Call) -> Answer:
    """The page at /docs: Swagger UI over GET /openapi.json."""
    return await _file(app.page, "docs/index.html", call)


async def docs_file(app: RestApp, call: Call) -> Answer:
    """One of /docs's files: ours, or Swagger UI's (a 404 when not fetched, which the page explains)."""
    return await _file(app.page, f"docs/{call.segments[0]}", call)


async def describe(app: RestApp, call: Call) -> Answer:
    """The network of a model version, described and drawn, with its weights."""
    return await asyncio.to_thread(_described, app.page.network, *_model(call))  # every weight: off the loop


def _described(network: NetworkViews, name: str, version: str) -> Answer:
    return _json(network.describe(name, version))


async def hidden_model(app: RestApp, call: Call) -> Answer:
    """The version's network with every Z[l] and A[l] as outputs."""
    data = await asyncio.to_thread(app.page.network.hidden_model, *_model(call))  # built once, maybe large
    return 200, BINARY, data


async def editable_model(app: RestApp, call: Call) -> Answer:
    """The version's network with every Z[l] and A[l] as outputs and W1, b1, ... as inputs."""
    data = await asyncio.to_thread(app.page.network.editable_model, *_model(call))  # built once, maybe large
    return 200, BINARY, data


async def oracle(app: RestApp, call: Call) -> Answer:
    """The float64 oracle's Z[l], A[l] and their bounds for one x or a batch X, for the served or the
    given weights; an overflow to infinity (or a NaN) is written as the infer route writes it,
    "Infinity", "-Infinity" or "NaN", never as null."""
    return await asyncio.to_thread(_oracle, app.page.network, *_model(call), call.body)  # 4,096 examples: off the loop


def _oracle(network: NetworkViews, name: str, version: str, body: bytes) -> Answer:
    document = network.oracle(name, version, _optional_json(body))
    for layer in document["layers"]:
        for key, values in layer.items():  # a vector, or a matrix row by row
            layer[key] = [*map(restcodec.json_values, values)] if values.ndim == 2 else restcodec.json_values(values)
    return _json(document)


async def weights_npz(app: RestApp, call: Call) -> Answer:
    """The given W and b as the .npz `forwardpass build --weights` reads, as a download."""
    name, version = _model(call)
    data = await asyncio.to_thread(app.page.network.weights_npz, name, version, _optional_json(call.body))
    return 200, [*BINARY, (b"content-disposition", _attachment(f"{name}-edited-weights.npz"))], data


def _attachment(filename: str) -> bytes:
    """Content-Disposition for a download named after a model, whatever its folder's name holds
    (RFC 6266: a plain ASCII name, and the name itself percent-encoded)."""
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}".encode()


def _json(document: dict) -> Answer:
    body = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    return 200, [(b"content-type", b"application/json"), (b"cache-control", b"no-store")], body


# Each handler takes the RestApp (whose `page` is a Page) and the call, as RestApp's own routes do.
ROUTES = [
    (("GET",), ("",), index),
    (("GET",), ("static", None), static),
    (("GET",), ("static", "ort", None), ort_file),
    (("GET",), ("docs",), docs),
    (("GET",), ("static", "docs", None), docs_file),
    *_model_routes(("network",), ("GET",), describe),
    *_model_routes(("network", "model.onnx"), ("GET",), hidden_model),
    *_model_routes(("network", "editable.onnx"), ("GET",), editable_model),
    *_model_routes(("network", "oracle"), ("POST",), oracle),
    *_model_routes(("network", "weights.npz"), ("POST",), weights_npz),
]
# The drawing's and the matrices' W values, the files, Z[1] = W x + b. weights.npz sends back only the
# weights it was sent, but the page's routes answer the same pages: one rule for all of them.
WEIGHTS = frozenset({describe, hidden_model, editable_model, oracle, weights_npz})
