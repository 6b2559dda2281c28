"""The page at `/`: its routes over HTTP, then the page itself in a real browser (Playwright driving
Debian's chromium-headless-shell), typing x and reading every Z[l], A[l] and y it shows against the
NumPy oracle, within the error bound of the model's dtype (forwardpass/tolerance.py).

The browser tests skip, with the reason, where Playwright, the browser or onnxruntime-web is missing;
`make test` installs all three where it can. Screenshots at desktop and phone width are written to
build/test-artifacts/page/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from forwardpass.builder.graph import build_model, serialize
from forwardpass.builder.oracle import forward
from forwardpass.builder.readback import read_file
from forwardpass.builder.spec import Activation
from forwardpass.show import ELIDED_HEAD, ELIDED_TAIL
from forwardpass.tolerance import TOLERANCES, layer_bounds
from forwardpass.web import ORT_FILES, ort_folder

from harness import (
    ROOT,
    TOKEN,
    ServerProcess,
    assert_one_error_line,
    build_into,
    missing_tool,
    need_tool,
    served_newest_opset,
)
from numerics import random_spec

BROWSER = Path("/usr/bin/chromium-headless-shell")
ARTIFACTS = ROOT / "build" / "test-artifacts" / "page"
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}
HOSTILE = "<img src=x onerror=alert(1)>"  # a folder name the page must show as text
DRAWN = {"mlp_3_4_1": 1, "mlp_3_4_1_sigmoid": 1}  # committed models, version 1
DRAWN_DIGITS = 4  # the drawing's values: the tables hold every digit


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """The committed models, a 4-8-8-3 softmax classifier, a columns-layout, a float64, a wide and a
    batch-limited model, and one whose name is HTML."""
    repository = tmp_path_factory.mktemp("page") / "models"
    shutil.copytree(ROOT / "models", repository)
    rng = np.random.default_rng(12)
    relu, tanh, sigmoid = Activation("relu"), Activation("tanh"), Activation("sigmoid")
    build_into(repository, "softmax_4_8_8_3", random_spec(rng, (4, 8, 8, 3), (relu, tanh, Activation("softmax"))))
    build_into(repository, "columns", random_spec(rng, (3, 5, 2), (tanh, sigmoid)), layout="columns")
    build_into(repository, "double", random_spec(rng, (3, 4, 2), (relu, Activation("identity"))), dtype="float64")
    build_into(repository, "wide", random_spec(rng, (3, 100, 2), (relu, sigmoid)))
    build_into(repository, HOSTILE, random_spec(rng, (2, 2, 1), (relu, sigmoid)))
    build_into(repository, "tiny", random_spec(rng, (3, 2, 1), (relu, sigmoid)))
    build_into(repository, "newest_opset", random_spec(rng, (3, 2, 1), (relu, sigmoid)), opset=served_newest_opset())
    text = (repository / "tiny" / "config.pbtxt").read_text()
    (repository / "tiny" / "config.pbtxt").write_text(text.replace("max_batch_size: 1048576", "max_batch_size: 2"))
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "1" / "model.onnx").write_bytes(b"not a model")
    return repository


@contextlib.contextmanager
def serving(models: Path, *flags: str):
    """One worker serving the page's repository (its broken model left out), stopped cleanly after."""
    process = ServerProcess(models, "--workers", "1", "--skip-bad-models", *flags)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


@pytest.fixture(scope="module")
def served(models):
    with serving(models) as process:
        yield process


@pytest.fixture(scope="module")
def guarded(models, pki):
    with serving(models, "--auth-token-file", str(pki / "token")) as process:
        yield process


def fetch(server, path: str, body: bytes | None = None, token: str | None = None):
    """(status, headers, body) of one request."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(server.http_url + path, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def oracle_of(models: Path, name: str, x: list[float]):
    """The spec's oracle for one x, and the bounds of its dtype: (read-back, forward, err_Z, err_A)."""
    back = read_file(models / name / "1" / "model.onnx")
    X = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    passed = forward(back.spec, X)
    err_Z, err_A = layer_bounds(back.spec, X, TOLERANCES[back.dtype].unit, passed)
    return back, passed, err_Z, err_A


# The routes, over HTTP


def test_page_and_its_files_need_no_token_and_carry_a_strict_policy(guarded):
    for path, kind in (("/", "text/html"), ("/static/page.js", "text/javascript"), ("/static/page.css", "text/css")):
        status, headers, _ = fetch(guarded, path)
        assert status == 200 and headers["Content-Type"].startswith(kind), (path, status)
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self' 'wasm-unsafe-eval'" in policy
        assert "connect-src 'self'" in policy and "http" not in policy  # nothing from elsewhere
        assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, _ = fetch(guarded, "/static/page.js")
    request = urllib.request.Request(guarded.http_url + "/static/page.js", headers={"If-None-Match": headers["ETag"]})
    with pytest.raises(urllib.error.HTTPError, match="304"):
        urllib.request.urlopen(request, timeout=30)  # unchanged: revalidated, not sent again
    assert fetch(guarded, "/static/../server/app.py")[0] == 404
    assert fetch(guarded, "/static/__init__.py")[0] == 404  # only the page's own files


@pytest.mark.parametrize("suffix", ["/network", "/network/model.onnx", "/infer"])
def test_every_model_route_needs_the_token(guarded, suffix):
    body = b'{"x": [0.1, 0.2, 0.3]}' if suffix == "/infer" else None
    status, headers, _ = fetch(guarded, f"/v2/models/mlp_3_4_1/versions/1{suffix}", body)
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert fetch(guarded, "/v2/models/mlp_3_4_1/versions/1/network/oracle", b'{"x": [1, 2, 3]}')[0] == 401
    assert fetch(guarded, "/v2/models/mlp_3_4_1/versions/1/network", token=TOKEN)[0] == 200


@pytest.mark.parametrize("name", ["mlp_3_4_1", "softmax_4_8_8_3", "columns", "double"])
def test_model_with_hidden_outputs_is_deterministic_and_agrees_with_the_oracle(served, models, name):
    status, headers, data = fetch(served, f"/v2/models/{name}/versions/1/network/model.onnx")
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    assert fetch(served, f"/v2/models/{name}/network/model.onnx")[2] == data  # the latest is version 1
    back = read_file(models / name / "1" / "model.onnx")
    expected = serialize(build_model(back.spec, dataclasses.replace(back.options, expose_hidden=True), name=name))
    assert data == expected
    x = [0.5, -1.25, 2.0, 0.75][: back.spec.sizes[0]]
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    fed = np.asarray([x] if back.layout == "rows" else [[v] for v in x], dtype=back.dtype)
    answers = dict(zip([o.name for o in session.get_outputs()], session.run(None, {back.input_name: fed})))
    _, passed, err_Z, err_A = oracle_of(models, name, x)
    for l in range(1, back.spec.depth + 1):
        a = back.output_name if l == back.spec.depth else f"A{l}"
        for got, want, bound in ((answers[f"Z{l}"], passed.Z[l], err_Z[l]), (answers[a], passed.A[l], err_A[l])):
            assert np.all(np.abs(got.reshape(-1) - want[:, 0]) <= bound[:, 0]), (l, got, want)


def test_oracle_route_answers_with_the_tolerance_modules_bounds(served, models):
    x = [0.1, -0.2, 0.3, 4.0]
    status, _, body = fetch(
        served, "/v2/models/softmax_4_8_8_3/versions/1/network/oracle", json.dumps({"x": x}).encode()
    )
    assert status == 200
    answer = json.loads(body)
    back, passed, err_Z, err_A = oracle_of(models, "softmax_4_8_8_3", x)
    assert answer["mode"] == "float32" and answer["unit"] == 2.0**-24
    # The server's NumPy may not be this one (the lowest set's is older), and float64 sums may round
    # differently: each oracle is within the float64 bound of the exact value, so they agree within
    # twice it. The bounds are sums of nonnegative terms, which any order rounds alike to 1e-12.
    X = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    exact_Z, exact_A = layer_bounds(back.spec, X, TOLERANCES["float64"].unit, passed)
    for l, layer in enumerate(answer["layers"], 1):
        assert np.all(np.abs(np.array(layer["Z"]) - passed.Z[l][:, 0]) <= 2 * exact_Z[l][:, 0])
        assert np.all(np.abs(np.array(layer["A"]) - passed.A[l][:, 0]) <= 2 * exact_A[l][:, 0])
        np.testing.assert_allclose(layer["Z_bound"], err_Z[l][:, 0], rtol=1e-12, atol=0)
        np.testing.assert_allclose(layer["A_bound"], err_A[l][:, 0], rtol=1e-12, atol=0)


def test_oracle_route_writes_an_overflow_as_the_infer_route_does(served, models):
    x = [1e308, 1e308, -1e308, 1e308]  # finite, but W[1] x overflows float64
    status, _, body = fetch(served, "/v2/models/softmax_4_8_8_3/network/oracle", json.dumps({"x": x}).encode())
    assert status == 200, body
    values = [v for layer in json.loads(body)["layers"] for key in ("Z", "A", "Z_bound") for v in layer[key]]
    assert None not in values  # orjson writes an infinity as null
    assert {"Infinity", "-Infinity", "NaN"} & set(values), values
    assert all(isinstance(v, float) or v in ("Infinity", "-Infinity", "NaN") for v in values), values
    _, passed, _, _ = oracle_of(models, "softmax_4_8_8_3", x)
    Z1 = np.array([float(v) for v in json.loads(body)["layers"][0]["Z"]])  # float() reads the names back
    np.testing.assert_array_equal(np.isinf(Z1), np.isinf(passed.Z[1][:, 0]))


@pytest.mark.parametrize(
    ("body", "message"),
    [(b'{"x": [1, 2]}', "list of 3 numbers"), (b'{"x": [1, "a", 3]}', "finite"), (b"[1]", "JSON object")],
)
def test_oracle_route_refuses_a_bad_x_by_name(served, body, message):
    status, _, answer = fetch(served, "/v2/models/mlp_3_4_1/network/oracle", body)
    assert status == 400 and message in json.loads(answer)["error"]


def test_the_page_can_be_turned_off(models):
    with serving(models, "--no-page") as process:
        assert fetch(process, "/")[0] == 404
        assert fetch(process, "/static/page.js")[0] == 404
        assert fetch(process, "/v2/models/mlp_3_4_1/network")[0] == 404
        assert fetch(process, "/v2/health/ready")[0] == 200
    with serving(models, "--no-page", "--page") as process:  # the image's --no-page, undone: the last wins
        assert fetch(process, "/")[0] == 200
        assert fetch(process, "/v2/models/mlp_3_4_1/network/model.onnx")[0] == 200


def test_missing_onnxruntime_web_is_a_404_that_says_how(models, tmp_path):
    with serving(models, "--ort-web-dir", str(tmp_path)) as process:
        status, _, body = fetch(process, f"/static/ort/{ORT_FILES[0]}")
        assert status == 404 and "forwardpass web-runtime" in json.loads(body)["error"]
        assert fetch(process, "/")[0] == 200
    assert "forwardpass web-runtime" in process.output()  # and the log says it once, at start-up


def need_onnxruntime_web() -> None:
    """onnxruntime-web in web/ort/, which `make web` fetches with npm (make test does where npm is)."""
    if ort_folder() is None:
        missing_tool("onnxruntime-web is not installed for the page: make web (it needs npm)")


def test_another_copy_of_onnxruntime_web_is_served_with_its_licence(models, tmp_path):
    need_onnxruntime_web()
    for name in ORT_FILES:  # as npm's dist folder has them: no licence file beside
        shutil.copy(ort_folder() / name, tmp_path / name)
    with serving(models, "--ort-web-dir", str(tmp_path)) as process:
        status, headers, body = fetch(process, f"/static/ort/{ORT_FILES[2]}")
        assert status == 200 and headers["Content-Type"] == "application/wasm" and body[:4] == b"\0asm"
        status, headers, body = fetch(process, "/static/ort/LICENSE")
        assert status == 200 and headers["Content-Type"].startswith("text/plain") and b"MIT License" in body


def test_web_runtime_without_npm_is_one_error_line(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # python, and no npm
    command = [sys.executable, "-m", "forwardpass", "web-runtime", "--dir", str(tmp_path)]
    assert_one_error_line(subprocess.run(command, capture_output=True, text=True, env=env), "npm is not installed")
    assert not any(tmp_path.iterdir())


# The page, in a browser


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    need_tool(str(BROWSER), "chromium-headless-shell")
    need_onnxruntime_web()
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(BROWSER))
        yield launched
        launched.close()


class Visit:
    """One page in a fresh browser context, with every request it made and every error it raised."""

    def __init__(self, browser, server, viewport=DESKTOP) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.origin = server.http_url
        self.requests, self.errors, self.dialogs = [], [], []
        self.page.on("request", lambda r: self.requests.append((r.method, r.url, r.headers)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.console = []  # a Content-Security-Policy violation is reported here
        self.page.on("console", lambda m: m.type == "error" and self.console.append(m.text))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(self.origin + "/")

    def choose(self, name: str, version: int = 1) -> None:
        self.page.select_option("#model", label=f"{name}, version {version}")
        self.page.locator(f"body[data-shown={json.dumps(f'{name}/{version}')}]").wait_for(state="attached")
        self.settle()

    def type_x(self, x: list[float]) -> None:
        for i, value in enumerate(x, 1):
            self.page.get_by_label(f"x{i}", exact=True).fill(repr(value))
        self.settle()

    def settle(self) -> None:
        # Selectors, not wait_for_function: the page's policy forbids the eval that one needs.
        self.page.locator('body[data-pending="0"]').wait_for(state="attached", timeout=30_000)

    def cells(self) -> dict[str, str]:
        """Every value the page shows, by its data-cell key (e.g. browser-Z1-2, drawing-A2-1, server-y-1)."""
        return self.page.eval_on_selector_all(
            "[data-cell]", "cells => Object.fromEntries(cells.map(c => [c.dataset.cell, c.textContent]))"
        )

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)

    def __enter__(self) -> Visit:
        return self

    def __exit__(self, *exc_info) -> None:
        self.context.close()


def shown(text: str) -> float:
    """A shown number; the page writes 'z 0.123', 'a 0.123' and 'ŷ 0.123' on the drawing."""
    return float(text.split()[-1])


def significant_digits(text: str) -> int:
    """How many significant digits a shown number has ('z -0.001235' and 'a 1.235e-5' have 4)."""
    mantissa = text.split()[-1].lstrip("-").split("e")[0]
    return len(mantissa.replace(".", "").lstrip("0")) or 1


def assert_shown_within_bound(text: str, expected: float, bound: float, digits: int, what: str) -> None:
    """Within the bound, plus half a unit in the last digit the page shows (it prints 9 significant
    digits of a float32, 17 of a float64)."""
    value = shown(text)
    shown_rounding = 5 * 10.0**-digits * abs(value)
    assert abs(value - expected) <= bound + shown_rounding, (
        f"{what}: shown {text}, oracle {expected!r}, bound {bound:.3g}"
    )


@pytest.mark.parametrize(
    ("name", "x"),
    [
        ("mlp_3_4_1", [0.1, 0.2, 0.3]),
        ("mlp_3_4_1_sigmoid", [1.5, -0.75, 2.25]),
        ("softmax_4_8_8_3", [0.3, -1.2, 2.5, 0.05]),
        ("columns", [-0.4, 0.9, 1.7]),
        ("double", [0.1, -2.7, 0.33]),
    ],
)
def test_page_shows_every_layer_as_the_oracle_computes_it(browser, served, models, name, x):
    with Visit(browser, served) as visit:
        visit.choose(name)
        visit.type_x(x)
        cells = visit.cells()
        back, passed, err_Z, err_A = oracle_of(models, name, x)
        digits = 17 if back.dtype == "float64" else 9
        depth = back.spec.depth
        for l in range(1, depth + 1):
            for i in range(back.spec.sizes[l]):
                for kind, values, bounds in (("Z", passed.Z, err_Z), ("A", passed.A, err_A)):
                    expected, bound = float(values[l][i, 0]), float(bounds[l][i, 0])
                    for where, shown_digits in (("browser", digits), ("drawing", DRAWN_DIGITS)):
                        key = f"{where}-{kind}{l}-{i + 1}"
                        assert_shown_within_bound(cells[key], expected, bound, shown_digits, key)
                    assert_shown_within_bound(cells[f"oracle-{kind}{l}-{i + 1}"], expected, 0.0, digits, "oracle")
        for i in range(back.spec.sizes[-1]):
            expected, bound = float(passed.A[depth][i, 0]), float(err_A[depth][i, 0])
            for where in ("browser", "server"):
                assert_shown_within_bound(cells[f"{where}-y-{i + 1}"], expected, bound, digits, f"{where} y{i + 1}")
        drawn = {key: text for key, text in cells.items() if key.startswith("drawing-")}
        assert drawn and all(significant_digits(t) <= DRAWN_DIGITS for t in drawn.values()), drawn
        verdicts = visit.page.locator("#answers td.ok, #answers td.bad").all_inner_texts()
        assert verdicts == ["within bound"] * back.spec.sizes[-1]
        assert visit.page.locator("#error").is_hidden() and not visit.errors, visit.errors
        assert not visit.console, visit.console

        # Everything came from the server: the wasm, the model and the answers; nothing from elsewhere.
        urls = [url for _, url, _ in visit.requests]
        assert all(url.startswith(visit.origin + "/") for url in urls), urls
        paths = {(method, url.removeprefix(visit.origin)) for method, url, _ in visit.requests}
        model = f"/v2/models/{name}/versions/1"
        for wanted in [("GET", f"/static/ort/{f}") for f in ORT_FILES] + [
            ("GET", f"{model}/network/editable.onnx"),  # W and b its inputs, so that they can be edited
            ("POST", f"{model}/infer"),
            ("POST", f"{model}/network/oracle"),
        ]:
            assert wanted in paths, (wanted, sorted(paths))

        visit.screenshot(f"{name}-desktop")
        visit.page.set_viewport_size(PHONE)
        width = visit.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page is {width} px wide at phone width"
        visit.screenshot(f"{name}-phone")


def test_the_keyboard_alone_picks_a_model_and_moves_x(browser, served, models):
    with Visit(browser, served, {"width": 1920, "height": 1080}) as visit:  # a projector's width
        visit.choose("mlp_3_4_1")
        visit.page.get_by_label("Model and version").focus()
        visit.page.keyboard.press("End")  # the last model in the list, as a keyboard user picks it
        visit.page.locator("body[data-shown]:not([data-shown='mlp_3_4_1/1'])").wait_for(state="attached")
        visit.settle()
        visit.choose("mlp_3_4_1_sigmoid")
        visit.page.get_by_label("x1 slider").focus()
        visit.page.keyboard.press("ArrowRight")  # one step of 0.01
        visit.settle()
        assert visit.page.get_by_label("x1", exact=True).input_value() == "0.11"
        _, passed, err_Z, err_A = oracle_of(models, "mlp_3_4_1_sigmoid", [0.11, 0.2, 0.3])
        shown_y = visit.cells()["browser-y-1"]
        assert_shown_within_bound(shown_y, float(passed.A[-1][0, 0]), float(err_A[-1][0, 0]), 9, "y after a key")
        visit.screenshot("mlp_3_4_1_sigmoid-projector")


def test_batch_box_shows_the_servers_outputs(browser, served, models):
    with Visit(browser, served) as visit:
        visit.choose("columns")
        rows = [[0.1, 0.2, 0.3], [1.0, -1.0, 0.5], [-2.0, 0.0, 2.5]]
        visit.page.get_by_label("CSV rows, one example per row").fill("\n".join(", ".join(map(str, r)) for r in rows))
        visit.page.get_by_role("button", name="Ask the server").click()
        visit.page.wait_for_selector('[data-cell="batch-3-2"]')
        cells = visit.cells()
        for r, x in enumerate(rows, 1):
            _, passed, _, err_A = oracle_of(models, "columns", x)
            for c in range(2):
                expected, bound = float(passed.A[-1][c, 0]), float(err_A[-1][c, 0])
                assert_shown_within_bound(cells[f"batch-{r}-{c + 1}"], expected, bound, 9, f"batch row {r}")


def test_a_server_refusal_is_one_clear_error_line(browser, served):
    with Visit(browser, served) as visit:
        visit.choose("tiny")
        visit.page.get_by_label("CSV rows, one example per row").fill("1, 2, 3\n4, 5, 6\n7, 8, 9")
        visit.page.get_by_role("button", name="Ask the server").click()
        error = visit.page.get_by_role("alert")
        error.wait_for()
        assert error.inner_text().startswith("The server refused the batch (HTTP 400): ")
        assert "max_batch_size" in error.inner_text()
        visit.screenshot("refusal-desktop")


def test_a_model_name_is_shown_as_text_never_run_as_html(browser, served):
    with Visit(browser, served) as visit:
        visit.choose(HOSTILE)
        assert HOSTILE in visit.page.locator("#model").inner_text()
        assert visit.page.locator("img").count() == 0 and not visit.dialogs and not visit.errors
        assert visit.page.locator('[data-cell="browser-y-1"]').inner_text() != "–"


def test_a_model_that_is_not_ready_is_listed_with_its_reason(browser, served):
    with Visit(browser, served) as visit:
        visit.choose("mlp_3_4_1")
        option = visit.page.locator("#model option", has_text="broken")
        assert option.is_disabled() and "not ready" in option.inner_text()


def test_the_page_asks_for_the_token_once_and_sends_it(browser, guarded):
    with Visit(browser, guarded, PHONE) as visit:
        visit.page.get_by_role("alert").wait_for()
        assert "needs a token" in visit.page.get_by_role("alert").inner_text()
        visit.screenshot("token-phone")
        visit.page.get_by_label("Bearer token").fill(TOKEN)
        visit.page.get_by_role("button", name="Use token").click()
        visit.page.locator("body[data-shown]").wait_for(state="attached")
        visit.settle()
        assert visit.page.evaluate("sessionStorage.getItem('forwardpass.token')") == TOKEN
        assert visit.page.locator("#error").is_hidden()
        visit.choose("mlp_3_4_1")  # a second model: no second question
        assert visit.page.locator("#token-form").is_hidden()
        asked = [(url, headers) for _, url, headers in visit.requests if "/v2/" in url]
        after = asked[[i for i, (_, h) in enumerate(asked) if "authorization" in h][0] :]
        assert all(h.get("authorization") == f"Bearer {TOKEN}" for _, h in after), after
        static = [h for _, url, h in visit.requests if "/static/" in url]
        assert static and all("authorization" not in h for h in static)


def test_without_onnxruntime_web_the_page_says_how_and_shows_the_server(browser, models, tmp_path):
    with serving(models, "--ort-web-dir", str(tmp_path)) as process, Visit(browser, process) as visit:
        visit.choose("mlp_3_4_1")
        assert "forwardpass web-runtime" in visit.page.locator("#runtime-status").inner_text()
        cells = visit.cells()
        assert cells["browser-y-1"] == "–"
        _, passed, _, err_A = oracle_of(models, "mlp_3_4_1", [0.1, 0.2, 0.3])
        assert_shown_within_bound(cells["server-y-1"], float(passed.A[-1][0, 0]), float(err_A[-1][0, 0]), 9, "y")


def test_a_model_the_browser_cannot_run_still_gets_the_servers_answer(browser, served, models):
    """onnxruntime-web 1.30 reads IR versions up to 13; the newest opset onnx writes may need more."""
    with Visit(browser, served) as visit:
        visit.choose("newest_opset")
        cells = visit.cells()
        _, passed, _, err_A = oracle_of(models, "newest_opset", [0.1, 0.2, 0.3])
        assert_shown_within_bound(cells["server-y-1"], float(passed.A[-1][0, 0]), float(err_A[-1][0, 0]), 9, "y")
        if cells["browser-y-1"] == "–":
            assert "onnxruntime-web cannot run this model" in visit.page.get_by_role("alert").inner_text()
        else:  # a newer onnxruntime-web: then it must be right
            assert_shown_within_bound(cells["browser-y-1"], float(passed.A[-1][0, 0]), float(err_A[-1][0, 0]), 9, "y")


def test_a_wide_layer_is_drawn_in_part_and_listed_whole(browser, served):
    with Visit(browser, served) as visit:
        visit.choose("wide")
        drawn = visit.page.locator('#drawing circle[data-unit^="1:"]').count()
        assert drawn < 64
        assert f"⋮ {100 - ELIDED_HEAD - ELIDED_TAIL} more" in visit.page.locator("#drawing").inner_text()
        listed = visit.page.locator("#layers table").first.locator("tbody tr").count()
        assert listed == 100
        visit.screenshot("wide-desktop")
