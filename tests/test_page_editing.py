"""The page's W[l] and b[l] (issue 20, items 1, 2, 3 and 7) in a real browser: the served weights as
matrices of fields, edited by keyboard or through the drawing and recomputed by onnxruntime-web and by
the oracle for the edited weights (checked here against NumPy's), Reset and Download (an .npz that
`forwardpass build --weights` builds from), one unit's sum worked out, the slides' notation, and a
page readable anywhere: the drawing's values to 4 digits in boxes no edge crosses, no page-level
scroll at 390 px, invalid input marked and every result stale until it is valid.

Screenshots at desktop and phone width go to build/test-artifacts/page/, with test_page.py's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import test_page
from test_page import DESKTOP, DRAWN_DIGITS, PHONE, Visit, assert_shown_within_bound, serving, significant_digits

from forwardpass.builder.oracle import forward
from forwardpass.builder.readback import read_file
from forwardpass.builder.spec import Activation, NetworkSpec
from forwardpass.tolerance import TOLERANCES, layer_bounds

from harness import ROOT, build_into
from numerics import random_spec

browser = test_page.browser  # the one Chromium (a fixture), as test_page.py launches it
DEPTHS = {"mlp_3_4_1": 2, "softmax_4_8_8_3": 3, "big": 2, "wide": 2}
STALE = "#answers-box, #drawing, #unit, #summary, #layers [data-values]"  # every result the page shows


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The committed 3-4-1 (b = 0), a 4-8-8-3 softmax classifier, a float64 and a columns model, a
    3-20-2 one whose W[1] (20 x 3), b[1] and W[2] (2 x 20) are too large to show as fields, and a
    3-100-2 one whose hidden layer is drawn in part."""
    repository = tmp_path_factory.mktemp("editing") / "models"
    shutil.copytree(ROOT / "models", repository)
    rng = np.random.default_rng(20)
    relu, tanh, sigmoid = Activation("relu"), Activation("tanh"), Activation("sigmoid")
    build_into(repository, "softmax_4_8_8_3", random_spec(rng, (4, 8, 8, 3), (relu, tanh, Activation("softmax"))))
    build_into(repository, "double", random_spec(rng, (3, 4, 2), (relu, Activation("identity"))), dtype="float64")
    build_into(repository, "columns", random_spec(rng, (3, 5, 2), (tanh, sigmoid)), layout="columns")
    build_into(repository, "big", random_spec(rng, (3, 20, 2), (relu, sigmoid)))
    build_into(repository, "wide", random_spec(rng, (3, 100, 2), (relu, sigmoid)))  # drawn in part
    return repository


@pytest.fixture(scope="module")
def served(models):
    with serving(models) as process:
        yield process


def served_weights(models, name):
    """The read-back file and its W[l], b[l] as lists in the slides' shapes (b[l] as n_l numbers)."""
    back = read_file(models / name / "1" / "model.onnx")
    return back, [W.tolist() for W in back.spec.weights], [b[:, 0].tolist() for b in back.spec.biases]


def oracle_for(back, W, b, x):
    """NumPy's oracle for these weights as the model's dtype holds them, and the bounds of that dtype."""
    stored = np.dtype(back.dtype)
    weights = tuple(np.asarray(w, dtype=stored).astype(np.float64) for w in W)
    biases = tuple(np.asarray(v, dtype=stored).astype(np.float64).reshape(-1, 1) for v in b)
    spec = NetworkSpec(back.spec.sizes, back.spec.activations, weights, biases)
    X = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    passed = forward(spec, X)
    err_Z, err_A = layer_bounds(spec, X, TOLERANCES[back.dtype].unit, passed)
    return spec, passed, err_Z, err_A


def assert_page_computes(visit, back, W, b, x, browser_too=True):
    """Every z[l], a[l] the page shows (browser and oracle columns) within the bound of NumPy's oracle
    for these weights, and the drawing's to its 4 digits."""
    cells = visit.cells()
    _, passed, err_Z, err_A = oracle_for(back, W, b, x)
    digits = 17 if back.dtype == "float64" else 9
    for l in range(1, back.spec.depth + 1):
        for i in range(back.spec.sizes[l]):
            for kind, values, bounds in (("Z", passed.Z, err_Z), ("A", passed.A, err_A)):
                expected, bound = float(values[l][i, 0]), float(bounds[l][i, 0])
                # Two float64 oracles (the server's and this one) agree within twice the float64 bound.
                assert_shown_within_bound(cells[f"oracle-{kind}{l}-{i + 1}"], expected, bound, digits, "oracle")
                wheres = (
                    (("browser", digits), ("drawing", DRAWN_DIGITS)) if browser_too else (("drawing", DRAWN_DIGITS),)
                )
                for where, shown_digits in wheres:
                    key = f"{where}-{kind}{l}-{i + 1}"
                    assert_shown_within_bound(cells[key], expected, bound, shown_digits, key)
    return cells


def edit(visit, label: str, value: str) -> None:
    """Types a value into a field as a keyboard does: select what is there, type over it (or delete it)."""
    field = visit.page.get_by_label(label, exact=True)
    field.focus()
    visit.page.keyboard.press("Control+A")
    if value:
        visit.page.keyboard.type(value)
    else:
        visit.page.keyboard.press("Backspace")
    visit.settle()


def tab_to(visit, predicate: str, key: str = "Tab", limit: int = 80) -> None:
    """Presses Tab (or Shift+Tab) until the focused element matches a CSS selector, as a keyboard user
    gets there."""
    for _ in range(limit):
        visit.page.keyboard.press(key)
        if visit.page.evaluate(f"document.activeElement.matches({json.dumps(predicate)})"):
            return
    raise AssertionError(f"Tab never reached {predicate}")


# Item 1: W[l] and b[l] as matrices


@pytest.mark.parametrize("name", ["mlp_3_4_1", "softmax_4_8_8_3", "double"])
def test_every_served_weight_is_a_field_named_as_on_the_slides(browser, served, models, name):
    back, W, b = served_weights(models, name)
    with Visit(browser, served) as visit:
        visit.choose(name)
        for l in range(1, back.spec.depth + 1):
            n, before = back.spec.sizes[l], back.spec.sizes[l - 1]
            caption = visit.page.locator(".matrix figcaption", has_text=f"W[{l}] {n} × {before}")
            assert caption.count() == 1, f"W[{l}] {n} × {before}"
            for j in range(n):
                field = visit.page.get_by_label(f"b[{l}][{j + 1}]", exact=True)
                assert np.asarray(float(field.input_value()), back.dtype) == np.asarray(b[l - 1][j], back.dtype)
                for k in range(before):
                    field = visit.page.get_by_label(f"W[{l}][{j + 1},{k + 1}]", exact=True)
                    shown = np.asarray(float(field.input_value()), back.dtype)
                    assert shown == np.asarray(W[l - 1][j][k], back.dtype), (l, j, k)
        assert visit.page.locator("body[data-edited='false']").count() == 1
        assert visit.page.get_by_role("button", name="Reset").is_disabled()


@pytest.mark.parametrize(
    ("name", "x"), [("mlp_3_4_1", [0.1, 0.2, 0.3]), ("columns", [-0.4, 0.9, 1.7]), ("double", [0.1, -2.7, 0.33])]
)
def test_editing_by_keyboard_recomputes_in_the_browser_and_the_oracle_and_reset_restores(
    browser, served, models, name, x
):
    back, W, b = served_weights(models, name)
    with Visit(browser, served) as visit:
        visit.choose(name)
        visit.type_x(x)
        assert visit.cells()["server-y-1"] != "–"
        tab_to(visit, 'input[aria-label="W[1][1,1]"]')  # from x, by Tab alone
        visit.page.keyboard.press("Tab")  # to W[1][1,2]
        visit.page.keyboard.press("Control+A")
        visit.page.keyboard.type("1.75")
        visit.settle()
        edit(visit, "b[1][2]", "-0.5")
        edit(visit, f"W[2][1,{back.spec.sizes[1]}]", "-2.25")
        W[0][0][1], b[0][1], W[1][0][-1] = 1.75, -0.5, -2.25
        cells = assert_page_computes(visit, back, W, b, x)
        # The server computes with its file's weights: its column is hidden, and a note says why.
        assert not any(key.startswith("server-") for key in cells)
        assert visit.page.locator("#server-note").is_visible()
        assert visit.page.locator("body[data-edited='true']").count() == 1
        visit.screenshot(f"edited-{name}-desktop")

        visit.page.get_by_role("button", name="Reset").focus()
        visit.page.keyboard.press("Enter")
        visit.settle()
        _, W, b = served_weights(models, name)
        cells = assert_page_computes(visit, back, W, b, x)
        _, passed, _, err_A = oracle_for(back, W, b, x)
        assert_shown_within_bound(cells["server-y-1"], float(passed.A[-1][0, 0]), float(err_A[-1][0, 0]), 9, "server")
        assert visit.page.locator("#server-note").is_hidden()
        assert visit.page.get_by_label("W[1][1,2]", exact=True).input_value() != "1.75"


def test_the_oracle_is_asked_with_the_edited_weights(browser, served, models):
    back, W, b = served_weights(models, "mlp_3_4_1")
    with Visit(browser, served) as visit:
        visit.choose("mlp_3_4_1")
        bodies = []
        visit.page.on("request", lambda r: r.url.endswith("/network/oracle") and bodies.append(json.loads(r.post_data)))
        edit(visit, "W[1][3,3]", "0.1")
        W[0][2][2] = 0.1
        sent = bodies[-1]
        assert set(sent) == {"x", "W", "b"}
        assert np.array_equal(np.asarray(sent["W"][0], np.float32), np.asarray(W[0], np.float32))
        assert sent["b"] == b
        assert not any(url.endswith("/infer") for _, url, _ in visit.requests[-3:])


def test_download_gives_an_npz_that_build_accepts(browser, served, models, tmp_path):
    back, W, b = served_weights(models, "mlp_3_4_1")
    with Visit(browser, served) as visit:
        visit.choose("mlp_3_4_1")
        edit(visit, "W[2][1,3]", "1.5")
        edit(visit, "b[2][1]", "0.25")
        W[1][0][2], b[1][0] = 1.5, 0.25
        with visit.page.expect_download() as download:
            visit.page.get_by_role("button", name="Download").click()
        assert download.value.suggested_filename == "mlp_3_4_1-edited-weights.npz"
        weights = tmp_path / download.value.suggested_filename
        download.value.save_as(weights)
        command = visit.page.locator("#download-command").inner_text()
        assert command.startswith(f"forwardpass build --weights {weights.name} --activations relu,sigmoid")
        visit.screenshot("download-desktop")
    built = tmp_path / "built.onnx"
    arguments = command.split()[2:]  # the page's command line, as a user pastes it, with the file here
    arguments[arguments.index("--weights") + 1] = str(weights)
    run = [sys.executable, "-m", "forwardpass", "build", *arguments, "--output", str(built)]
    done = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    spec = read_file(built).spec
    for got, want in zip(spec.weights, W):
        assert np.array_equal(got, np.asarray(want, np.float32).astype(np.float64))
    # The built model answers as the oracle of the edited weights.
    x = [0.5, -1.0, 2.0]
    session = onnxruntime.InferenceSession(built.read_bytes(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: np.asarray([x], np.float32)})
    _, passed, _, err_A = oracle_for(back, W, b, x)
    assert abs(float(y[0, 0]) - float(passed.A[-1][0, 0])) <= float(err_A[-1][0, 0])


def test_a_large_matrix_is_a_summary_and_the_drawing_edits_it(browser, served, models):
    back, W, b = served_weights(models, "big")
    with Visit(browser, served) as visit:
        visit.choose("big")
        assert visit.page.locator("#layers input.param").count() == 2  # b[2] only: 2 x 1
        cells = visit.cells()
        flat = np.asarray(W[0])
        for what, value in (("min", flat.min()), ("max", flat.max()), ("mean", flat.mean())):
            assert abs(float(cells[f"summary-W1-{what}"]) - value) <= 5e-4 * abs(value) + 1e-12, what
        assert visit.page.get_by_label("W[1][2,3]", exact=True).count() == 0
        # Clicking the edge of W[1][2,3] opens the editor of unit a[1]_2, on that weight.
        visit.page.locator('#drawing line[data-weight="1:2:3"]').dispatch_event("click")
        focused = visit.page.evaluate("document.activeElement.getAttribute('aria-label')")
        assert focused == "W[1][2,3]"
        visit.page.keyboard.press("Control+A")
        visit.page.keyboard.type("-3")
        visit.settle()
        W[0][1][2] = -3.0
        # The keyboard alone: Tab to unit a[1]_5, Enter, Tab into its editor, to its bias.
        tab_to(visit, 'circle[data-unit="1:5"]', "Shift+Tab")  # back from the editor to the drawing
        visit.page.keyboard.press("Enter")
        tab_to(visit, 'input[aria-label="b[1][5]"]')
        visit.page.keyboard.press("Control+A")
        visit.page.keyboard.type("2.5")
        visit.settle()
        b[0][4] = 2.5
        # Any unit by its number, drawn or not: the layer's picker opens its editor too.
        visit.page.get_by_label("unit of layer 2").fill("2")
        visit.page.get_by_role("button", name="Edit this unit").last.click()
        assert visit.page.evaluate("document.activeElement.getAttribute('aria-label')") == "W[2][2,1]"
        visit.page.keyboard.press("Control+A")
        visit.page.keyboard.type("0.5")
        visit.settle()
        W[1][1][0] = 0.5
        assert_page_computes(visit, back, W, b, [0.1, 0.2, 0.3])
        visit.screenshot("big-desktop")


# Item 2: one unit worked out


@pytest.mark.parametrize("name", ["mlp_3_4_1", "softmax_4_8_8_3"])
def test_selecting_a_unit_by_keyboard_works_its_sum_out(browser, served, models, name):
    back, W, b = served_weights(models, name)
    n = back.spec.sizes[0]
    with Visit(browser, served) as visit:
        visit.choose(name)
        tab_to(visit, 'circle[data-unit="1:2"]')
        visit.page.keyboard.press("Enter")
        assert visit.page.locator('circle[data-unit="1:2"][aria-pressed="true"]').count() == 1
        assert visit.page.locator('#layers tr.chosen[data-row="1:2"]').count() == 2  # its row of W[1] and b[1]
        work = visit.page.locator("#unit .work").all_inner_texts()
        terms = " + ".join(f"w2{k}·x{k}" for k in range(1, n + 1))
        assert work[0].replace("\n", "") == f"z[1]2 = {terms} + b2"
        x = [0.1, 0.2, 0.3, 0.4][:n]
        # = w21·x1 + ...: each weight and input to 4 digits, negative ones in brackets, then the bias
        terms = work[1].lstrip("= ").split(" + ")
        assert [float(t.split("·")[0].strip("()")) for t in terms[:n]] == [
            float(f"{w:.4g}") for w in np.float32(W[0][1])
        ]
        assert [float(t.split("·")[1].strip("()")) for t in terms[:n]] == x
        assert float(terms[n].strip("()")) == float(f"{np.float32(b[0][1]):.4g}")
        cells = visit.cells()
        assert cells["unit-z"] == cells["browser-Z1-2"] and cells["unit-a"] == cells["browser-A1-2"]
        _, passed, err_Z, _ = oracle_for(back, W, b, x)
        assert_shown_within_bound(cells["unit-z"], float(passed.Z[1][1, 0]), float(err_Z[1][1, 0]), 9, "z[1]_2")
        assert work[-1].startswith("a[1]2 = relu(z[1]2) = ")
        if name == "softmax_4_8_8_3":  # the output: ŷ_1 = softmax(z[3])_1
            visit.page.locator('circle[data-unit="3:1"]').click()
            last = visit.page.locator("#unit .work").all_inner_texts()[-1]
            assert last.startswith("ŷ1 = softmax(z[3])1")
            assert visit.cells()["unit-a"] == visit.cells()["browser-A3-1"]
        visit.screenshot(f"unit-{name}-desktop")


# Item 3: the slides' notation


def test_the_slides_notation_in_the_drawing_and_the_tables(browser, served):
    with Visit(browser, served) as visit:
        visit.choose("softmax_4_8_8_3")
        names = visit.page.eval_on_selector_all(
            "#drawing text[data-name]", "ts => Object.fromEntries(ts.map(t => [t.dataset.name, t.textContent]))"
        )
        assert names["0:1"] == "x1" and names["1:8"] == "a[1]8" and names["2:3"] == "a[2]3" and names["3:2"] == "ŷ2"
        rows = visit.page.locator("#answers tbody th").all_inner_texts()
        assert [r.replace("\n", "") for r in rows] == ["ŷ1", "ŷ2", "ŷ3"]
        assert visit.page.get_by_role("heading", name="Output ŷ").count() == 1
        equations = visit.page.locator("#equations").inner_text().replace("\n", " ")
        for wanted in ("z[1] = W[1] x + b[1]", "a[1] = relu(z[1])", "z[2] = W[2] a[1] + b[2]", "ŷ = a[3]"):
            assert wanted in equations, equations
        head = visit.page.locator("#layers table.numbers thead").first.inner_text().replace("\n", " ")
        assert "z[1] browser" in head and "a[1] oracle" in head and "Z[" not in head


# Item 7: readable anywhere


def intersects(segment, box) -> bool:
    """Whether a segment passes through a box's inside (Liang-Barsky clipping; touching is not crossing)."""
    (x1, y1, x2, y2), (left, top, width, height) = segment, box
    left, top, right, bottom = left + 0.5, top + 0.5, left + width - 0.5, top + height - 0.5
    dx, dy = x2 - x1, y2 - y1
    low, high = 0.0, 1.0
    for p, q in ((-dx, x1 - left), (dx, right - x1), (-dy, y1 - top), (dy, bottom - y1)):
        if p == 0:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low > high:
            return False
    return True


def test_intersects_sees_a_crossing_and_not_a_miss():
    assert intersects((0, 0, 10, 10), (4, 4, 2, 2)) and not intersects((0, 0, 10, 0), (4, 4, 2, 2))
    assert not intersects((0, 5, 4, 5), (4, 0, 10, 10))  # ends on its edge


@pytest.mark.parametrize("name", ["mlp_3_4_1", "softmax_4_8_8_3", "big", "wide"])
def test_no_edge_crosses_a_label_and_values_have_4_digits(browser, served, name):
    with Visit(browser, served) as visit:
        visit.choose(name)
        edges = visit.page.eval_on_selector_all(
            "#drawing line", "ls => ls.map(l => ['x1', 'y1', 'x2', 'y2'].map(a => Number(l.getAttribute(a))))"
        )
        labels = visit.page.eval_on_selector_all(
            "#drawing text, #drawing .values rect",
            "ts => ts.map(t => { const b = t.getBBox(); return [b.x, b.y, b.width, b.height, t.textContent]; })",
        )
        assert edges and len(labels) > 2 * len(edges) ** 0.5
        crossed = [(e, box) for e in edges for box in labels if box[2] and intersects(e, box[:4])]
        assert not crossed, crossed[:5]
        drawn = {k: v for k, v in visit.cells().items() if k.startswith("drawing-")}
        assert all(significant_digits(v) <= DRAWN_DIGITS for v in drawn.values()), drawn
        width = visit.page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert width[0] <= width[1], f"at desktop width the page is {width[0]} px wide in {width[1]}"
        y_hat = visit.page.locator(f'#drawing g[data-box="{DEPTHS[name]}:1"]').bounding_box()  # ŷ_1's values
        assert y_hat["x"] + y_hat["width"] <= DESKTOP["width"], y_hat


@pytest.mark.parametrize("name", ["mlp_3_4_1", "softmax_4_8_8_3", "big"])
def test_at_phone_width_nothing_scrolls_the_page_and_y_hat_is_on_screen(browser, served, name):
    with Visit(browser, served, PHONE) as visit:
        visit.choose(name)
        if name != "big":  # 20 inputs take a screen of their own
            last = visit.page.locator("#answers tbody tr").last.bounding_box()
            assert last["y"] + last["height"] <= PHONE["height"], f"ŷ is below the first screen: {last}"
        visit.page.locator('circle[data-unit="1:1"]').click()  # the worked sum is long: it must wrap
        visit.settle()
        width = visit.page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert width[0] <= width[1], f"the page is {width[0]} px wide in {width[1]}"
        for selector in ("#answers tbody th", '[data-cell="browser-y-1"]'):  # the rest scrolls in its box
            box = visit.page.locator(selector).first.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (selector, box)
        if name == "mlp_3_4_1":  # a 3-column drawing fits a phone whole: ŷ and its values are seen
            depth = 2
            for selector in (f'circle[data-unit="{depth}:1"]', f'g[data-box="{depth}:1"]'):
                box = visit.page.locator(f"#drawing {selector}").bounding_box()
                assert box["x"] + box["width"] <= PHONE["width"], (selector, box)
        # Anything wider than the phone scrolls inside its own box.
        for region in visit.page.locator(".scroll, .drawing").all():
            assert region.evaluate("e => getComputedStyle(e).overflowX") == "auto"
        visit.screenshot(f"{name}-phone-editing")


MODULE_RESULTS = ", #batch-view-out, #activation-plots, #landscape-result"  # batch.js's and landscape.js's results


def test_invalid_input_is_marked_at_its_field_and_every_result_is_stale(browser, served, models):
    back, W, b = served_weights(models, "mlp_3_4_1")
    with Visit(browser, served) as visit:
        visit.choose("mlp_3_4_1")
        before = visit.cells()
        edit(visit, "x2", "")
        assert visit.page.get_by_label("x2", exact=True).get_attribute("aria-invalid") == "true"
        results = visit.page.locator(STALE + MODULE_RESULTS)
        assert results.count() == 4 + 2 + 2 + 1 and visit.page.locator(".stale").count() == results.count()
        assert visit.page.locator("#layers input.stale, #layers .matrices.stale").count() == 0  # fields stay
        note = visit.page.locator("#stale-note")
        assert note.is_visible() and "x2 is not a number" in note.inner_text()
        assert visit.cells()["drawing-Z1-1"] == before["drawing-Z1-1"]  # still the last valid x's
        visit.screenshot("stale-desktop")
        edit(visit, "x2", "0.5")
        edit(visit, "W[1][2,2]", "-")  # a sign alone: no number yet
        assert visit.page.get_by_label("x2", exact=True).get_attribute("aria-invalid") is None
        assert visit.page.get_by_label("W[1][2,2]", exact=True).get_attribute("aria-invalid") == "true"
        assert "W[1][2,2] is not a number" in note.inner_text()
        assert visit.page.locator("#answers-box.stale").count() == 1
        edit(visit, "W[1][2,2]", "1e39")  # a number, but no float32
        assert "W[1][2,2] is beyond float32’s range" in note.inner_text()
        edit(visit, "W[1][2,2]", "-1.25")
        W[0][1][1] = -1.25
        assert note.is_hidden() and visit.page.locator(".stale").count() == 0
        assert_page_computes(visit, back, W, b, [0.1, 0.5, 0.3])


def test_a_slider_widens_to_a_typed_value(browser, served):
    with Visit(browser, served) as visit:
        visit.choose("mlp_3_4_1")
        edit(visit, "x1", "7.5")
        slider = visit.page.get_by_label("x1 slider")
        assert float(slider.get_attribute("max")) >= 7.5 and slider.input_value() == "7.5"
        edit(visit, "x1", "-12")
        assert float(slider.get_attribute("min")) <= -12 and slider.input_value() == "-12"


# The hooks for the page's other modules, and the page without onnxruntime-web


def test_the_hooks_give_the_weights_x_and_a_runner(browser, served, models):
    back, W, b = served_weights(models, "mlp_3_4_1")
    with Visit(browser, served) as visit:
        visit.choose("mlp_3_4_1")
        visit.page.evaluate("window.reasons = []; window.forwardpassPage.onChange((v, r) => window.reasons.push(r))")
        edit(visit, "W[1][1,1]", "2")
        W[0][0][0] = 2.0
        seen = visit.page.evaluate(
            """async () => {
              const s = window.forwardpassPage.state();
              const out = await s.run({ [s.model.input.name]: s.tensor([0.5, -1, 2], [1, 3]) });
              return { W: s.W, b: s.b, x: s.x, edited: s.edited, valid: s.valid, reasons: window.reasons,
                       y: Array.from(out[s.model.output].data) };
            }"""
        )
        assert seen["W"] == W and seen["b"] == b and seen["x"] == [0.1, 0.2, 0.3]
        assert seen["edited"] and seen["valid"] and seen["reasons"] == ["model", "weights"]
        _, passed, _, err_A = oracle_for(back, W, b, [0.5, -1, 2])
        assert abs(seen["y"][0] - float(passed.A[-1][0, 0])) <= float(err_A[-1][0, 0])


def test_without_onnxruntime_web_edited_weights_go_to_the_oracle(browser, models, tmp_path):
    back, W, b = served_weights(models, "mlp_3_4_1")
    with serving(models, "--ort-web-dir", str(tmp_path)) as process, Visit(browser, process, DESKTOP) as visit:
        visit.choose("mlp_3_4_1")
        assert "not installed" in visit.page.locator("#runtime-status").inner_text()
        edit(visit, "W[1][4,1]", "0.75")
        W[0][3][0] = 0.75
        cells = assert_page_computes(visit, back, W, b, [0.1, 0.2, 0.3], browser_too=False)
        assert cells["browser-y-1"] == "–" and "server-y-1" not in cells
