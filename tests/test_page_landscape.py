"""The page's landscape (web/landscape.js) in a real browser: a heatmap of one unit over the plane of two
inputs, the others held at x, computed as one batch of 64 x 64 rows by onnxruntime-web. Every grid
value it keeps is checked against the NumPy oracle on the same rows, within the error bound of the
model's dtype, and its pixels against the colour scale; screenshots go to build/test-artifacts/page/.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_page import PHONE, Visit, browser, fetch, models, served, serving  # noqa: F401 (fixtures)

from forwardpass.builder.oracle import forward
from forwardpass.builder.readback import read_file
from forwardpass.builder.spec import NetworkSpec
from forwardpass.tolerance import TOLERANCES, layer_bounds

GRID = 64
PIXELS = 512  # the canvas's own resolution
CELL = PIXELS // GRID
# landscape.js's colour scale: orange below zero, grey at zero, blue above, scaled by the largest |value|
NEGATIVE, ZERO, POSITIVE = np.array([245, 147, 34]), np.array([232, 234, 235]), np.array([8, 119, 189])
CLASSES = np.array([[230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66]])  # its first class colours


def test_the_landscapes_files_are_served_as_the_pages_are(served):  # noqa: F811
    for path, kind in (("/static/landscape.js", "text/javascript"), ("/static/landscape.css", "text/css")):
        status, headers, body = fetch(served, path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body, (path, status)
        assert "default-src 'none'" in headers["Content-Security-Policy"]
    status, _, page = fetch(served, "/")
    assert b'src="/static/landscape.js"' in page and b'<section id="landscape"' in page


def drawn(visit: Visit, name: str, before: str = "") -> dict:
    """The landscape once drawn for this model (again, if `before` is the draw count seen earlier)."""
    after = f':not([data-drawn="{before}"])' if before else ""
    selector = f'#landscape[data-model="{name}/1"][data-pending="0"]{after}'
    visit.page.locator(selector).wait_for(state="attached", timeout=30_000)
    kept = visit.page.evaluate("window.forwardpassLandscape")
    kept["drawn"] = visit.page.locator("#landscape").get_attribute("data-drawn")
    return kept


def grid_rows(kept: dict, n: int) -> np.ndarray:
    """The 4,096 rows the page ran, in columns (n_x, m), row r of the picture (top first) then column c."""
    h, v = (int(kept[axis][1:]) - 1 for axis in ("horizontal", "vertical"))
    X = np.repeat(np.asarray(kept["fixed"], dtype=np.float64).reshape(n, 1), GRID * GRID, axis=1)
    X[h] = np.tile(kept["xs"], GRID)
    X[v] = np.repeat(kept["ys"], GRID)
    return X


def oracle_grid(repository, name: str, kept: dict, spec: NetworkSpec | None = None):
    """The read-back model, the oracle's forward pass over the page's rows (with the served weights,
    or the spec given), and its bounds."""
    back = read_file(repository / name / "1" / "model.onnx")
    spec = spec or back.spec
    X = grid_rows(kept, spec.sizes[0])
    passed = forward(spec, X)
    err_Z, err_A = layer_bounds(spec, X, TOLERANCES[back.dtype].unit, passed)
    return back, passed, err_Z, err_A


def assert_unit_is_the_oracles(repository, name: str, kept: dict, spec: NetworkSpec | None = None) -> None:
    back, passed, err_Z, err_A = oracle_grid(repository, name, kept, spec)
    l, i = kept["layer"], kept["index"] - 1
    want, bound = (passed.Z, err_Z) if kept["kind"] == "Z" else (passed.A, err_A)
    got = np.asarray(kept["values"], dtype=np.float64)
    assert got.shape == (GRID * GRID,)
    worst = np.max(np.abs(got - want[l][i]) - bound[l][i])
    assert worst <= 0, f"{name} {kept['unit']}: a grid value is {worst:.3g} outside the bound"


def shade(value: float, reach: float) -> np.ndarray:
    t = max(-1.0, min(1.0, value / reach)) if reach > 0 else 0.0
    return np.round(ZERO + ((NEGATIVE if t < 0 else POSITIVE) - ZERO) * abs(t))


def pixel(visit: Visit, r: float, c: float) -> np.ndarray:
    """The canvas's colour at the centre of grid cell (r, c), or at any point in cells."""
    x, y = int((c + 0.5) * CELL), int((r + 0.5) * CELL)
    script = f"[...document.getElementById('landscape-canvas').getContext('2d').getImageData({x}, {y}, 1, 1).data]"
    return np.array(visit.page.evaluate(script)[:3])


def away_from_the_point(kept: dict) -> list[tuple[int, int]]:
    """A few cells (corners, centre, edges) not under the ringed point of the current x."""
    h, v = (int(kept[axis][1:]) - 1 for axis in ("horizontal", "vertical"))
    c0 = int(np.argmin(np.abs(np.asarray(kept["xs"]) - kept["fixed"][h])))
    r0 = int(np.argmin(np.abs(np.asarray(kept["ys"]) - kept["fixed"][v])))
    cells = [(0, 0), (0, 63), (63, 0), (63, 63), (32, 10), (10, 50), (50, 20)]
    return [(r, c) for r, c in cells if abs(r - r0) > 3 or abs(c - c0) > 3]


def heatmap(visit: Visit):
    return visit.page.get_by_role("img", name=re.compile(r"^heatmap"))


@pytest.mark.parametrize("name", ["mlp_3_4_1", "columns", "double"])
def test_the_heatmap_is_the_oracles_unit_over_the_plane(browser, served, models, name):  # noqa: F811
    with Visit(browser, served) as visit:
        visit.choose(name)
        kept = drawn(visit, name)
        image = heatmap(visit)
        assert image.count() == 1
        label = image.get_attribute("aria-label")
        assert label.startswith("heatmap of ŷ1 over x1 and x2"), label
        assert visit.page.locator("#landscape-x-name").inner_text() == "x1"
        assert visit.page.locator("#landscape-y-name").inner_text() == "x2"
        assert kept["unit"] == "A2-1" and (kept["horizontal"], kept["vertical"]) == ("x1", "x2")
        assert kept["fixed"][2] == pytest.approx(0.3)  # x3 held at the page's x
        assert_unit_is_the_oracles(models, name, kept)
        values = np.asarray(kept["values"])
        reach = float(np.max(np.abs(values)))
        for r, c in away_from_the_point(kept):
            want = shade(values[r * GRID + c], reach)
            assert np.all(np.abs(pixel(visit, r, c) - want) <= 1), (r, c, values[r * GRID + c])
        # The current x (0.1, 0.2 on axes from -3 to 3) is the ringed point: white at its centre.
        at = (np.array([3 - 0.2, 0.1 + 3]) / 6 * GRID) - 0.5  # (row, column) in cells
        assert list(pixel(visit, *at)) == [255, 255, 255]
        box = image.bounding_box()  # the pointer over cell (10, 50) reads its value out
        image.hover(position={"x": box["width"] * 50.5 / GRID, "y": box["height"] * 10.5 / GRID})
        probe = visit.page.locator("#landscape-probe").inner_text()
        assert probe.startswith(f"x1 = {kept['xs'][50]:.4g}, x2 = {kept['ys'][10]:.4g}: ŷ1 = "), probe
        assert float(probe.split()[-1]) == pytest.approx(values[10 * GRID + 50], rel=1e-3)
        visit.page.mouse.move(0, 0)  # away: no cell read out
        image.focus()  # the keyboard moves a cursor from the current x's cell (x1 = 0.1, x2 = 0.2)
        visit.page.keyboard.press("ArrowRight")
        visit.page.keyboard.press("ArrowUp")
        c, r = int((0.1 + 3) / 6 * GRID) + 1, GRID - 1 - int((0.2 + 3) / 6 * GRID) - 1
        probe = visit.page.locator("#landscape-probe").inner_text()
        assert probe.startswith(f"x1 = {kept['xs'][c]:.4g}, x2 = {kept['ys'][r]:.4g}: ŷ1 = "), probe
        assert float(probe.split()[-1]) == pytest.approx(values[r * GRID + c], rel=1e-3)
        status = visit.page.locator("#landscape-status").inner_text()
        assert re.search(r"64 × 64 = 4,096 rows in one onnxruntime-web run: [0-9.]+ ms", status), status
        assert not visit.errors and not visit.console, (visit.errors, visit.console)


def test_the_heatmap_follows_the_held_inputs_and_marks_x(browser, served, models):  # noqa: F811
    with Visit(browser, served) as visit:
        visit.choose("mlp_3_4_1")
        first = drawn(visit, "mlp_3_4_1")
        visit.type_x([0.1, 0.2, 2.5])  # x3 is held: a new plane
        moved = drawn(visit, "mlp_3_4_1", first["drawn"])
        assert moved["fixed"][2] == pytest.approx(2.5)
        assert moved["values"] != first["values"]
        assert_unit_is_the_oracles(models, "mlp_3_4_1", moved)
        assert "x3 = 2.5 held" in heatmap(visit).get_attribute("aria-label")
        visit.screenshot("landscape-x3-desktop")
        visit.page.locator("#landscape").screenshot(path="/tmp/i20d-x3-desktop.png")

        visit.type_x([-1.5, 0.2, 2.5])  # x1 is an axis: the same plane, the point moves
        again = drawn(visit, "mlp_3_4_1", moved["drawn"])
        assert again["values"] == moved["values"]
        assert "x1 = -1.5, x2 = 0.2, is the ringed point" in heatmap(visit).get_attribute("aria-label")

        visit.page.get_by_label("x3", exact=True).fill("")  # invalid: the picture stays, marked stale
        visit.page.locator("#landscape-result.stale").wait_for(state="attached")
        assert "Stale" in visit.page.locator("#landscape-status").inner_text()
        visit.page.locator("#landscape").screenshot(path="/tmp/i20d-stale-desktop.png")
        visit.type_x([-1.5, 0.2, 2.5])
        visit.page.locator("#landscape-result:not(.stale)").wait_for(state="attached")
        again = drawn(visit, "mlp_3_4_1", moved["drawn"])

        visit.type_x([7.0, 0.2, 2.5])  # beyond the slider: it widens, and the axis with it
        wide = drawn(visit, "mlp_3_4_1", again["drawn"])
        assert visit.page.locator("#landscape-x-max").inner_text() == "7" and wide["xs"][-1] > 6.9
        assert_unit_is_the_oracles(models, "mlp_3_4_1", wide)
        again = wide

        visit.page.get_by_label("Vertical axis").select_option(label="x3")
        across = drawn(visit, "mlp_3_4_1", again["drawn"])
        assert (across["horizontal"], across["vertical"]) == ("x1", "x3")
        assert_unit_is_the_oracles(models, "mlp_3_4_1", across)
        assert heatmap(visit).get_attribute("aria-label").startswith("heatmap of ŷ1 over x1 and x3")


def test_edited_weights_redraw_the_landscape_as_the_oracle_computes_them(browser, served, models):  # noqa: F811
    with Visit(browser, served) as visit:
        visit.choose("mlp_3_4_1")
        first = drawn(visit, "mlp_3_4_1")
        visit.page.get_by_role("spinbutton", name="W[1][1,1]").fill("2.5")
        weighted = drawn(visit, "mlp_3_4_1", first["drawn"])
        visit.page.get_by_role("spinbutton", name="b[1][2]").fill("-0.75")
        biased = drawn(visit, "mlp_3_4_1", weighted["drawn"])
        back = read_file(models / "mlp_3_4_1" / "1" / "model.onnx").spec
        W1, b1 = back.weights[0].copy(), back.biases[0].copy()
        W1[0, 0] = 2.5
        assert weighted["values"] != first["values"]
        edited = NetworkSpec(back.sizes, back.activations, (W1, *back.weights[1:]), (b1, *back.biases[1:]))
        assert_unit_is_the_oracles(models, "mlp_3_4_1", weighted, edited)
        b1[1] = -0.75
        edited = NetworkSpec(back.sizes, back.activations, (W1, *back.weights[1:]), (b1, *back.biases[1:]))
        assert biased["values"] != weighted["values"]
        assert_unit_is_the_oracles(models, "mlp_3_4_1", biased, edited)
        visit.page.get_by_role("button", name="Reset").click()
        reset = drawn(visit, "mlp_3_4_1", biased["drawn"])
        assert reset["values"] == first["values"]


def test_a_selected_unit_shows_its_own_heatmap(browser, served, models):  # noqa: F811
    with Visit(browser, served) as visit:
        visit.choose("mlp_3_4_1")
        first = drawn(visit, "mlp_3_4_1")
        visit.page.get_by_label("Unit shown").select_option(label="z[1]_3")
        hidden = drawn(visit, "mlp_3_4_1", first["drawn"])
        assert (hidden["kind"], hidden["layer"], hidden["index"]) == ("Z", 1, 3)
        assert_unit_is_the_oracles(models, "mlp_3_4_1", hidden)
        assert heatmap(visit).get_attribute("aria-label").startswith("heatmap of z[1]_3 over x1 and x2")
        visit.page.locator("#landscape").screenshot(path="/tmp/i20d-z13-desktop.png")
        visit.page.locator('#drawing circle[data-unit="1:2"]').focus()  # a unit selected in the drawing, by key
        visit.page.keyboard.press("Enter")
        chosen = drawn(visit, "mlp_3_4_1", hidden["drawn"])
        assert (chosen["kind"], chosen["layer"], chosen["index"]) == ("A", 1, 2)
        assert visit.page.get_by_label("Unit shown").input_value() == "A1-2"
        assert_unit_is_the_oracles(models, "mlp_3_4_1", chosen)


def test_a_softmax_model_shows_each_class_and_the_argmax(browser, served, models):  # noqa: F811
    with Visit(browser, served) as visit:
        visit.choose("softmax_4_8_8_3")
        kept = drawn(visit, "softmax_4_8_8_3")
        assert kept["unit"] == "argmax"
        assert (
            heatmap(visit).get_attribute("aria-label").startswith("heatmap of the class, argmax of ŷ, over x1 and x2")
        )
        legend = visit.page.locator("#landscape-legend li").all_inner_texts()
        assert [item.split(":")[0] for item in legend] == ["class 1", "class 2", "class 3"]
        back, passed, _, err_A = oracle_grid(models, "softmax_4_8_8_3", kept)
        y, bound = passed.A[-1], err_A[-1]
        classes = np.asarray(kept["classes"]) - 1
        top = np.sort(y, axis=0)
        clear = top[-1] - top[-2] > 2 * bound.max(axis=0)  # where rounding cannot swap the first two
        assert clear.sum() > GRID * GRID // 2
        np.testing.assert_array_equal(classes[clear], np.argmax(y, axis=0)[clear])
        swatches = CLASSES[classes]  # each cell painted in its class's colour
        for r, c in away_from_the_point(kept):
            assert list(pixel(visit, r, c)) == list(swatches[r * GRID + c]), (r, c)
        visit.page.locator("#landscape").screenshot(path="/tmp/i20d-softmax-desktop.png")

        options = visit.page.locator("#landscape-unit option").all_inner_texts()
        assert options[:4] == ["class: argmax of ŷ", "ŷ1", "ŷ2", "ŷ3"] and "a[2]_8" in options
        visit.page.get_by_label("Unit shown").select_option(label="ŷ2")
        second = drawn(visit, "softmax_4_8_8_3", kept["drawn"])
        assert_unit_is_the_oracles(models, "softmax_4_8_8_3", second)
        visit.page.get_by_label("Unit shown").select_option(label="a[2]_5")
        hidden = drawn(visit, "softmax_4_8_8_3", second["drawn"])
        assert_unit_is_the_oracles(models, "softmax_4_8_8_3", hidden)


def test_the_landscape_fits_a_phone(browser, served):  # noqa: F811
    with Visit(browser, served, PHONE) as visit:
        visit.choose("softmax_4_8_8_3")
        drawn(visit, "softmax_4_8_8_3")
        width = visit.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page is {width} px wide at phone width"
        box = heatmap(visit).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] and box["width"] >= 200, box
        visit.page.locator("#landscape").screenshot(path="/tmp/i20d-softmax-phone.png")
        visit.screenshot("landscape-softmax-phone")


def test_without_onnxruntime_web_the_landscape_says_it_needs_it(browser, models, tmp_path):  # noqa: F811
    with serving(models, "--ort-web-dir", str(tmp_path)) as process, Visit(browser, process) as visit:
        visit.choose("mlp_3_4_1")
        status = visit.page.locator("#landscape-status")
        status.filter(has_text="needs onnxruntime-web").wait_for()
        assert heatmap(visit).get_attribute("aria-label").startswith("heatmap: none")


def test_a_model_the_browser_cannot_run_has_no_landscape_and_says_why(browser, served):  # noqa: F811
    with Visit(browser, served) as visit:
        visit.choose("newest_opset")
        if visit.cells()["browser-y-1"] == "–":  # onnxruntime-web cannot read its IR version
            status = visit.page.locator("#landscape-status")
            status.filter(has_text="onnxruntime-web cannot run this model").wait_for()
            assert heatmap(visit).get_attribute("aria-label").startswith("heatmap: none")
        else:  # a newer onnxruntime-web: then it has one
            assert drawn(visit, "newest_opset")["unit"] == "A2-1"
