"""CORS (--cors-allow-origin): a page of an allowed origin calls the server from a real browser and reads
its answers, the binary extension's included; a page of any other origin is blocked by the browser.

The pages are served from two other loopback ports (two origins: an origin is scheme, host and port),
the server from a third, with a token, so every call but the preflight carries `Authorization`, which a
browser sends only after a preflight. Chromium is Debian's chromium-headless-shell driven by Playwright,
as in test_page.py; the header-level checks use http.client.
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np
import pytest
from test_page import BROWSER

from forwardpass.builder.readback import read_file

from harness import ROOT, TOKEN, ServerProcess, need_tool
from numerics import assert_matches_oracle, random_input

MODEL, SPARE = "mlp_3_4_1", "mlp_3_4_1_sigmoid"  # SPARE is unloaded and loaded again
ONLY_CALLS = "http://calls-only.example:3000"  # --allowed-origins: may load, unload, read weights; reads no answer
PAGE = b"<!doctype html><title>another origin</title>"
BLOCKED_BY_CORS = "TypeError: Failed to fetch"  # what fetch() raises when the browser withholds an answer


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's method name
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """(allowed, foreign): two loopback origins, each serving an empty page."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Page) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tuple(f"http://127.0.0.1:{server.server_address[1]}" for server in servers)
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory, origins) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("cors")
    shutil.copytree(ROOT / "models", folder / "models")
    (folder / "token").write_text(TOKEN + "\n")
    server = ServerProcess(folder / "models", "--workers", "1", "--model-control-mode", "explicit", "--load-model", "*",
                           "--auth-token-file", str(folder / "token"), "--cors-allow-origin", origins[0].upper(),
                           "--allowed-origins", ONLY_CALLS)  # fmt: skip
    yield server
    assert server.stop() == 0, server.output()


def call(server, method: str, path: str, headers: dict, body: bytes | None = None) -> tuple[int, dict, bytes]:
    """(status, headers in lower case, body) of one request with exactly these headers."""
    connection = http.client.HTTPConnection(urlsplit(server.http_url).netloc, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def preflight(origin: str, method: str = "POST", asked: str = "authorization, content-type") -> dict:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": asked}


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# Headers, as a browser would read them


def test_a_preflight_of_an_allowed_origin_needs_no_token_and_allows_the_binary_extension(cors_server, origins):
    asked = "authorization, content-type, content-encoding, inference-header-content-length"
    status, headers, _ = call(cors_server, "OPTIONS", f"/v2/models/{MODEL}/infer", preflight(origins[0], asked=asked))
    assert status == 200, headers
    assert headers["access-control-allow-origin"] == origins[0]
    assert {h.strip() for h in headers["access-control-allow-headers"].split(",")} == set(asked.split(", "))
    assert {m.strip() for m in headers["access-control-allow-methods"].split(",")} >= {"GET", "POST"}
    assert headers["access-control-expose-headers"] == "inference-header-content-length"
    assert headers["vary"] == "origin" and int(headers["access-control-max-age"]) > 0


def test_a_preflight_of_another_origin_is_refused(cors_server, origins):
    for origin in (origins[1], ONLY_CALLS, "null", origins[0] + "0"):
        status, headers, body = call(cors_server, "OPTIONS", f"/v2/models/{MODEL}", preflight(origin, "GET"))
        assert status == 403 and "access-control-allow-origin" not in headers, (origin, headers)
        assert "--cors-allow-origin" in json.loads(body)["error"]


def test_answers_carry_cors_headers_for_allowed_origins_only(cors_server, origins):
    status, headers, _ = call(cors_server, "GET", f"/v2/models/{MODEL}", {**AUTH, "Origin": origins[0]})
    assert status == 200 and headers["access-control-allow-origin"] == origins[0]
    status, headers, _ = call(cors_server, "GET", f"/v2/models/{MODEL}", {"Origin": origins[0]})  # no token
    assert status == 401 and headers["access-control-allow-origin"] == origins[0], "a page may read why"
    for origin in (origins[1], ONLY_CALLS):
        status, headers, _ = call(cors_server, "GET", f"/v2/models/{MODEL}", {**AUTH, "Origin": origin})
        assert status == 200 and "access-control-allow-origin" not in headers and headers["vary"] == "origin"


def test_one_allow_list_a_cors_origin_passes_the_origin_check_and_allowed_origins_keep_theirs(cors_server, origins):
    for origin in (origins[0], ONLY_CALLS):
        for action in ("unload", "load"):
            path = f"/v2/repository/models/{SPARE}/{action}"
            assert call(cors_server, "POST", path, {**AUTH, "Origin": origin})[0] == 200, (origin, action)
    assert call(cors_server, "POST", f"/v2/repository/models/{SPARE}/unload", {**AUTH, "Origin": origins[1]})[0] == 403


def test_without_the_flag_no_answer_carries_cors_headers(server):
    origin = "http://127.0.0.1:1"
    status, headers, _ = call(server, "GET", "/v2/health/ready", {"Origin": origin})
    assert status == 200 and not any(name.startswith("access-control-") or name == "vary" for name in headers)
    status, headers, _ = call(server, "OPTIONS", "/v2/health/ready", preflight(origin, "GET"))
    assert status == 403 and "access-control-allow-origin" not in headers


@pytest.mark.parametrize("value", ["*", "127.0.0.1:8080", "http://a.example/", "http://a.example/page"])
def test_cors_allow_origin_takes_origins_only(value):
    from forwardpass.errors import InputError
    from forwardpass.server.options import ServeOptions

    with pytest.raises(InputError, match="--cors-allow-origin"):
        ServeOptions(cors_allow_origins=(value,))


# In Chromium

CALLS = """async ({server, token, rows}) => {
  const auth = {Authorization: `Bearer ${token}`};
  const model = `${server}/v2/models/mlp_3_4_1`;
  const read = async (answer) => ({status: answer.status, body: await answer.json()});
  const json = JSON.stringify({inputs: [{name: "x", shape: [rows.length, 3], datatype: "FP32", data: rows.flat()}]});
  const calls = {
    live: () => fetch(`${server}/v2/health/live`).then(read),  // a simple request: no preflight
    metadata: () => fetch(model, {headers: auth}).then(read),
    json: () => fetch(`${model}/infer`, {method: "POST", body: json,
      headers: {...auth, "Content-Type": "application/json"}}).then(read),
    gzip: async () => {
      const gzip = new Blob([json]).stream().pipeThrough(new CompressionStream("gzip"));
      return fetch(`${model}/infer`, {method: "POST", body: await new Response(gzip).arrayBuffer(),
        headers: {...auth, "Content-Type": "application/json", "Content-Encoding": "gzip"}}).then(read);
    },
    binary: async () => {
      const x = new Float32Array(rows.flat());
      const head = new TextEncoder().encode(JSON.stringify({
        inputs: [{name: "x", shape: [rows.length, 3], datatype: "FP32", parameters: {binary_data_size: x.byteLength}}],
        outputs: [{name: "y", parameters: {binary_data: true}}],
      }));
      const body = new Uint8Array(head.length + x.byteLength);
      body.set(head);
      body.set(new Uint8Array(x.buffer), head.length);
      const answer = await fetch(`${model}/infer`, {method: "POST", body, headers: {...auth,
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": String(head.length)}});
      const split = answer.headers.get("Inference-Header-Content-Length");  // null unless exposed
      const bytes = await answer.arrayBuffer();
      const header = JSON.parse(new TextDecoder().decode(bytes.slice(0, Number(split))));
      return {status: answer.status, split, header, y: Array.from(new Float32Array(bytes.slice(Number(split))))};
    },
    unload: () => fetch(`${server}/v2/repository/models/mlp_3_4_1_sigmoid/unload`, {method: "POST", headers: auth})
      .then(read),
  };
  const results = {};
  for (const [name, run] of Object.entries(calls)) {
    try {
      results[name] = await run();
    } catch (error) {
      results[name] = `${error.name}: ${error.message}`;
    }
  }
  return results;
}"""


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    need_tool(str(BROWSER), "chromium-headless-shell")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(BROWSER))
        yield launched
        launched.close()


def calls_from(browser, origin: str, server, X: np.ndarray) -> tuple[dict, list[str]]:
    """What a page of `origin` reads from each call (or the error fetch raised), and the console's errors."""
    context = browser.new_context()
    try:
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: message.type == "error" and console.append(message.text))
        page.goto(origin + "/")
        arguments = {"server": server.http_url, "token": TOKEN, "rows": X.T.tolist()}
        return page.evaluate(CALLS, arguments), console
    finally:
        context.close()


def ready(server, model: str) -> bool:
    return call(server, "GET", f"/v2/models/{model}/ready", AUTH)[0] == 200


def test_a_page_of_an_allowed_origin_reads_every_answer(browser, cors_server, origins):
    spec = read_file(ROOT / "models" / MODEL / "1" / "model.onnx").spec
    X = random_input(np.random.default_rng(19), 3, 5, "float32")
    results, console = calls_from(browser, origins[0], cors_server, X)
    assert not console, console
    raised = {name: result for name, result in results.items() if isinstance(result, str)}
    assert not raised, raised
    assert results["live"] == {"status": 200, "body": {"live": True}}
    assert results["metadata"]["status"] == 200 and results["metadata"]["body"]["name"] == MODEL
    for name in ("json", "gzip"):
        (output,) = results[name]["body"]["outputs"]
        assert results[name]["status"] == 200 and output["shape"] == [5, 1], results[name]
        assert_matches_oracle(spec, X, np.array(output["data"], np.float32).reshape(1, 5), "float32")
    binary = results["binary"]
    assert binary["status"] == 200 and binary["split"] is not None, binary
    assert binary["header"]["outputs"][0]["parameters"]["binary_data_size"] == 5 * 4
    assert_matches_oracle(spec, X, np.array(binary["y"], np.float32).reshape(1, 5), "float32")
    assert results["unload"] == {"status": 200, "body": {}} and not ready(cors_server, SPARE)
    assert call(cors_server, "POST", f"/v2/repository/models/{SPARE}/load", AUTH)[0] == 200


def test_a_page_of_another_origin_is_blocked_by_the_browser(browser, cors_server, origins):
    results, console = calls_from(browser, origins[1], cors_server, np.ones((3, 2), np.float32))
    assert results == dict.fromkeys(results, BLOCKED_BY_CORS) and len(results) == 6, results
    assert any("CORS policy" in line for line in console), console  # the browser says why
    assert ready(cors_server, SPARE), "the unload was refused at its preflight, never sent"
