"""GET /openapi.json and the page at /docs: the document is built from the route table (a route nobody
described fails here), validates as OpenAPI 3.1 (openapi-spec-validator), and a live server conforms
to it: schemathesis sends generated requests to every operation, the model name pinned to a served
model, and checks that no answer is a 5xx and that each status, content type, header and JSON body is
one the document gives (and fails a document the server does not match). Load and unload run on a
throwaway repository in explicit mode. Then /docs in
a real browser (Swagger UI, fetched by `make web`), under its own Content-Security-Policy.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from forwardpass.server import openapi, page, rest
from forwardpass.web import SWAGGER, ort_folder

from harness import ROOT, TOKEN, ServerProcess, missing_tool, need_tool

BROWSER = Path("/usr/bin/chromium-headless-shell")
ARTIFACTS = ROOT / "build" / "test-artifacts" / "docs"
MODEL = "mlp_3_4_1"  # a committed model: the one every generated request names
# schemathesis: generated cases per operation (about 700 requests in all), and the bound in seconds on
# each of its two runs (together they take about 13 s here).
EXAMPLES = 15
SCHEMATHESIS_TIMEOUT = 40
FILES = {"/static/{file}": "page.js", "/static/ort/{file}": "LICENSE", "/static/docs/{file}": "docs.js"}
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


def fetch(url: str, token: str | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one GET."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def operations(document: dict) -> set[str]:
    return {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}


def routed(routes: list) -> set[str]:
    return {f"{method} {openapi.path_of(pattern)}" for methods, pattern, _ in routes for method in methods}


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """The committed models, in a folder of this module's own: load and unload may change what is served."""
    folder = tmp_path_factory.mktemp("openapi") / "models"
    shutil.copytree(ROOT / "models", folder)
    return folder


@pytest.fixture(scope="module")
def served(repository):
    server = ServerProcess(
        repository, "--workers", "1", "--model-control-mode", "explicit", "--load-model", "*", "--page"
    )
    yield server
    assert server.stop() == 0, server.output()


# The document and the route table


def test_every_route_is_an_operation_and_every_operation_a_route():
    routes = rest.ROUTES + page.ROUTES
    document = openapi.document(routes, lambda path: True, rest.ORIGIN_CHECKED | page.WEIGHTS)
    assert operations(document) == routed(routes)
    described = {key.replace(openapi.VERSIONED, "") for key in operations(document)}
    assert described == set(openapi.OPERATIONS), "an operation is described that no route serves"


def test_a_route_nobody_described_cannot_be_documented():
    async def hidden(app, call):
        return 200, [], b""

    with pytest.raises(KeyError, match="GET /v2/hidden"):
        openapi.document([*rest.ROUTES, (("GET",), ("v2", "hidden"), hidden)], lambda path: False, frozenset())


def test_the_served_document_is_valid_openapi_31_of_the_served_routes(served):
    validator = pytest.importorskip("openapi_spec_validator")
    status, headers, body = fetch(served.http_url + openapi.PATH)
    assert status == 200 and headers["Content-Type"] == "application/json"
    document = json.loads(body)
    validator.validate(document)  # raises with the first error
    assert document["openapi"] == "3.1.0"
    assert operations(document) == routed(rest.ROUTES + page.ROUTES)
    assert "security" not in json.dumps(document["paths"])  # no token here: nothing asks for one
    infer = document["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert set(infer["responses"]["200"]["content"]) == {"application/json", "application/octet-stream"}
    assert "binary_data_size" in json.dumps(document["components"]["schemas"]["InferInput"])
    assert "as many values as `shape` multiplies to" in document["components"]["schemas"]["InferRequest"]["description"]


def test_without_the_page_the_document_has_no_page_routes(repository):
    server = ServerProcess(repository, "--workers", "1", "--no-page")
    try:
        document = json.loads(fetch(server.http_url + openapi.PATH)[2])
        assert operations(document) == routed(rest.ROUTES)
        assert fetch(server.http_url + "/docs")[0] == 404
    finally:
        assert server.stop() == 0, server.output()


def test_with_a_token_the_document_needs_none_and_says_which_operations_do(repository, pki):
    server = ServerProcess(repository, "--workers", "1", "--auth-token-file", str(pki / "token"))
    try:
        status, _, body = fetch(server.http_url + openapi.PATH)  # Swagger UI fetches it before any token
        assert status == 200
        document = json.loads(body)
        paths = document["paths"]
        assert document["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
        assert paths["/v2/models/{model_name}/infer"]["post"]["security"] == [{"bearer": []}]
        assert "401" in paths["/v2/models/{model_name}/infer"]["post"]["responses"]
        for open_path in ("/v2/health/live", "/v2/health/ready", openapi.PATH, "/", "/docs", "/static/{file}"):
            assert "security" not in paths[open_path]["get"], open_path
            assert "401" not in paths[open_path]["get"]["responses"], open_path
        assert fetch(server.http_url + "/docs")[0] == 200
        assert fetch(server.http_url + "/v2/models/mlp_3_4_1")[0] == 401
        assert fetch(server.http_url + "/v2/models/mlp_3_4_1", TOKEN)[0] == 200
    finally:
        assert server.stop() == 0, server.output()


# A live server against its document


def schemathesis(server: ServerProcess, folder: Path, *only: str, document: dict | None = None) -> tuple[int, str]:
    """Run schemathesis on the server over its document (or the one given), on the operations whose path
    matches one of `only` (else all), bounded in examples and time: its exit status and report. Every
    operation chosen must have been tested."""
    pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install -e '.[test]')")
    config = folder / "schemathesis.toml"
    # Every model path names the served model's version 1, and each file route a file it serves;
    # the rest of each request is generated.
    config.write_text(
        f'[parameters]\n"path.model_name" = "{MODEL}"\n"path.model_version" = "1"\n'
        + "".join(f'[[operations]]\ninclude-name = "GET {path}"\nparameters = {{ file = "{name}" }}\n'
                  for path, name in FILES.items())
    )  # fmt: skip
    location = server.http_url + openapi.PATH
    if document is not None:
        location = str(folder / "openapi.json")
        Path(location).write_text(json.dumps(document))
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", location,
        "--url", server.http_url, "--checks", ",".join(CHECKS), "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(EXAMPLES), "--seed", "19", "--workers", "1", "--request-timeout", "10", "--no-color",
        *(f"--include-path-regex={pattern}" for pattern in only),
    ]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=SCHEMATHESIS_TIMEOUT, cwd=folder)
    report = f"{done.stdout}\n{done.stderr}\n(schemathesis took {time.monotonic() - start:.1f} s)"
    served = json.loads(fetch(server.http_url + openapi.PATH)[2])
    chosen = [o for o in operations(served) if not only or any(re.search(p, o.split()[1]) for p in only)]
    assert re.search(rf"Tested: {len(chosen)}\b", done.stdout), report  # every operation chosen, none skipped
    assert fetch(server.http_url + "/v2/health/live")[0] == 200  # and the server still answers
    return done.returncode, report


def test_the_live_server_conforms_to_its_document(served, tmp_path):
    # Load and unload last and alone: an unloaded model is 503 (not ready), which the check for
    # server errors counts as one.
    for only in (r"^/(?!v2/repository/models/)", r"^/v2/repository/models/"):
        status, report = schemathesis(served, tmp_path, only)
        assert status == 0, report


def test_schemathesis_fails_an_answer_the_document_does_not_allow(served, tmp_path):
    document = json.loads(fetch(served.http_url + openapi.PATH)[2])
    metadata = document["components"]["schemas"]["ServerMetadata"]
    del metadata["properties"]["extensions"]  # the server writes it; a closed schema without it refuses it
    metadata["required"].remove("extensions")
    status, report = schemathesis(served, tmp_path, "^/v2$", document=document)
    assert status != 0 and "Response violates schema" in report, report


# The page at /docs


def test_docs_page_needs_no_token_and_carries_its_own_policy(repository, pki):
    server = ServerProcess(repository, "--workers", "1", "--auth-token-file", str(pki / "token"))
    try:
        for path, kind in (("/docs", "text/html"), ("/static/docs/docs.js", "text/javascript")):
            status, headers, _ = fetch(server.http_url + path)
            assert status == 200 and headers["Content-Type"].startswith(kind), (path, status)
            policy = headers["Content-Security-Policy"]
            assert "default-src 'none'" in policy and "script-src 'self';" in policy
            assert "wasm" not in policy and "http" not in policy and "unsafe" not in policy
            assert headers["X-Content-Type-Options"] == "nosniff"
        assert fetch(server.http_url + "/static/docs/package.json")[0] == 404  # only the page's own files
    finally:
        assert server.stop() == 0, server.output()


def test_without_swagger_ui_the_docs_bundle_is_a_404_and_the_page_links_the_document(repository, tmp_path):
    server = ServerProcess(repository, "--workers", "1", "--swagger-ui-dir", str(tmp_path))
    try:
        assert fetch(server.http_url + f"/static/docs/{SWAGGER.files[0]}")[0] == 404
        status, _, body = fetch(server.http_url + "/docs")
        assert status == 200 and b'href="/openapi.json"' in body and b"forwardpass web-runtime" in body
    finally:
        assert server.stop() == 0, server.output()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    need_tool(str(BROWSER), "chromium-headless-shell")
    if ort_folder(fetched=SWAGGER) is None:
        missing_tool("Swagger UI is not installed for /docs: make web (it needs npm)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(BROWSER))
        yield launched
        launched.close()


def test_docs_page_shows_every_operation_with_no_policy_violation(browser, served):
    document = json.loads(fetch(served.http_url + openapi.PATH)[2])
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tab = context.new_page()
        errors, requests = [], []
        tab.on("console", lambda m: m.type == "error" and errors.append(m.text))  # CSP violations land here
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.on("request", lambda r: requests.append(r.url))
        tab.goto(served.http_url + "/docs")
        shown = tab.locator(".opblock")
        shown.first.wait_for(timeout=30_000)
        assert shown.count() == len(operations(document))
        tab.locator(".opblock-summary-path", has_text="/v2/models/{model_name}/infer").first.click()
        tab.get_by_text("Inference-Header-Content-Length").first.wait_for(timeout=10_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=ARTIFACTS / "docs.png", full_page=False)
        assert not errors, errors
        assert all(url.startswith(served.http_url) for url in requests), requests  # nothing from elsewhere
    finally:
        context.close()
