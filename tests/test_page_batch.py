"""The page's batch view and activation plots (web/batch.js), in a real browser: the CSV batch as the
slides' X (n_x x m, one example per column), every Z[l] = W[l]X + b[l] and A[l] = g(Z[l]) with its
shape and b[l]'s broadcast, checked against the NumPy oracle for the batch; the loop "for i = 1 to m"
and the matrix form giving the same numbers; each layer's g plotted with the current z[l] marked.

It uses test_page.py's repository, server and browser. Screenshots go to build/test-artifacts/page/.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import test_page
from test_page import ARTIFACTS, PHONE, Visit, assert_shown_within_bound, oracle_of, serving

from forwardpass.builder.oracle import forward
from forwardpass.builder.readback import read_file
from forwardpass.builder.spec import Activation
from forwardpass.tolerance import TOLERANCES, layer_bounds

from harness import build_into
from numerics import random_spec

# test_page.py's fixtures: its repository, the server of it and the one Chromium
browser, models, served = test_page.browser, test_page.models, test_page.served
BATCH = [
    [0.1, 0.2, 0.3, 0.4],
    [1.0, -1.0, 0.5, 2.0],
    [-2.0, 0.0, 2.5, -0.5],
    [0.3, -1.2, 2.5, 0.05],
    [3.0, 1.0, -2.0, 0.0],
]


def batch_oracle(models, name: str, examples: list[list[float]]):
    """(read-back, forward, err_Z, err_A) of the spec's float64 oracle on X, one example per column."""
    back = read_file(models / name / "1" / "model.onnx")
    X = np.asarray(examples, dtype=np.float64).T
    passed = forward(back.spec, X)
    err_Z, err_A = layer_bounds(back.spec, X, TOLERANCES[back.dtype].unit, passed)
    return back, passed, err_Z, err_A


def fill_batch(visit: Visit, examples: list[list[float]]) -> None:
    """Type a batch into the batch box as CSV, one example per row."""
    visit.page.get_by_label("CSV rows, one example per row").fill("\n".join(", ".join(map(repr, x)) for x in examples))


def show_batch(visit: Visit, examples: list[list[float]]) -> None:
    """Type a batch into the batch box and wait for the batch view of exactly that many examples."""
    n, m = len(examples[0]), len(examples)
    fill_batch(visit, examples)
    visit.page.locator(f'[data-matrix="mat-X"][data-shape="{n}x{m}"]').wait_for(state="attached")
    settle(visit)


def section_shot(visit: Visit, name: str) -> None:
    """Screenshots of the batch view and the plots alone, in parts of at most 1,200 px high, which the
    full page's makes too small to read."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for section in ("batch-view", "activations"):
        for old in ARTIFACTS.glob(f"{name}-{section}-*.png"):
            old.unlink()  # an earlier run's parts
        left, first, width, bottom = visit.page.locator(f"#{section}").evaluate(
            "e => { const r = e.getBoundingClientRect(); "
            "return [r.left + scrollX, r.top + scrollY, r.width, r.bottom + scrollY]; }"
        )
        top, part = first, 1
        while top < bottom:
            height = min(1200, bottom - top)
            clip = {"x": left, "y": top, "width": width, "height": height}
            visit.page.screenshot(path=ARTIFACTS / f"{name}-{section}-{part}.png", clip=clip, full_page=True)
            top, part = top + height, part + 1


def settle(visit: Visit) -> None:
    visit.settle()
    visit.page.locator('body[data-batch-pending="0"]').wait_for(state="attached", timeout=30_000)


@pytest.mark.parametrize("name", ["mlp_3_4_1", "softmax_4_8_8_3", "columns", "double", "wide"])
def test_batch_view_shows_the_slides_matrices_as_the_oracle_computes_them(browser, served, models, name):
    with Visit(browser, served) as visit:
        visit.choose(name)
        back = read_file(models / name / "1" / "model.onnx")
        n = back.spec.sizes
        examples = [x[: n[0]] for x in BATCH]
        m = len(examples)
        show_batch(visit, examples)
        back, passed, err_Z, err_A = batch_oracle(models, name, examples)
        digits = 17 if back.dtype == "float64" else 9
        cells = visit.cells()
        page = visit.page
        for i in range(n[0]):
            for j in range(m):
                assert float(cells[f"mat-X-{i + 1}-{j + 1}"]) == examples[j][i]
        assert page.locator('[data-matrix="mat-X"] caption').inner_text() == f"X = A[0]: nx × m = {n[0]} × {m}"
        for l in range(1, back.spec.depth + 1):
            for kind in ("Z", "A"):
                box = page.locator(f'[data-matrix="mat-{kind}{l}"]')
                assert box.get_attribute("data-shape") == f"{n[l]}x{m}"
                assert box.locator("caption").inner_text() == f"{kind}[{l}]: {n[l]} × m = {n[l]} × {m}"
            # b[l] drawn over the m columns: the first as it is, the m - 1 copies faded
            broadcast = page.locator(f'[data-matrix="mat-b{l}"]')
            assert broadcast.get_attribute("data-shape") == f"{n[l]}x{m}"
            assert f"b[{l}] broadcast to {n[l]} × {m}" in broadcast.locator("caption").inner_text()
            assert broadcast.locator("td.copy").count() == n[l] * (m - 1)
            for i in range(n[l]):
                for j in range(m):
                    b = cells[f"mat-b{l}-{i + 1}-{j + 1}"]
                    assert b == cells[f"mat-b{l}-{i + 1}-1"]  # every column the same b[l]
                    assert_shown_within_bound(b, back.spec.biases[l - 1][i, 0], 0, digits, "b")
                    for kind, values, bounds in (("Z", passed.Z, err_Z), ("A", passed.A, err_A)):
                        key = f"mat-{kind}{l}-{i + 1}-{j + 1}"
                        assert_shown_within_bound(
                            cells[key], float(values[l][i, j]), float(bounds[l][i, j]), digits, key
                        )
            if max(n[l], n[l - 1]) <= 16:  # a larger W[l] is summarised
                W = back.spec.weights[l - 1]
                for i in range(n[l]):
                    for j in range(n[l - 1]):
                        assert_shown_within_bound(cells[f"mat-W{l}-{i + 1}-{j + 1}"], W[i, j], 0, digits, "W")
        # The loop, one onnxruntime-web run per example, gives the matrix form's numbers.
        loop = page.locator("#batch-loop-diff")
        assert loop.get_attribute("data-diff") == "0", loop.inner_text()
        assert f"ran onnxruntime-web {m} times, one column each" in loop.inner_text()
        assert "for i = 1 to m" in page.locator("#batch-view pre").first.inner_text()
        assert "within its error bound" in page.locator("#batch-oracle-verdict").inner_text()
        assert page.locator("#batch-view td.bad").count() == 0
        assert page.locator("#batch-view-error").is_hidden() and not visit.errors, visit.errors
        visit.screenshot(f"batch-{name}-desktop")
        section_shot(visit, f"batch-{name}-desktop")


ADVICE = {  # a few words of the slides' advice the plot of each activation gives, hidden or output
    ("relu", True): "default for hidden layers",
    ("tanh", True): "usually better than sigmoid",
    ("sigmoid", True): "advise against it",
    ("sigmoid", False): "binary output",
    ("softmax", False): "one probability per class",
    ("identity", False): "regression",
    ("leaky_relu", True): "small slope for z < 0",
}


@pytest.mark.parametrize(
    ("name", "x", "moved"),
    [
        ("softmax_4_8_8_3", [0.3, -1.2, 2.5, 0.05], 1.75),
        ("mlp_3_4_1_sigmoid", [1.5, -0.75, 2.25], -2.5),
        ("double", [0.1, -2.7, 0.33], 1.0),
    ],
)
def test_each_layers_g_is_plotted_with_the_current_z_marked(browser, served, models, name, x, moved):
    with Visit(browser, served) as visit:
        visit.choose(name)
        for example in (x, [moved, *x[1:]]):  # and again after x moves
            visit.type_x(example)
            settle(visit)
            back, passed, err_Z, err_A = oracle_of(models, name, example)
            depth = back.spec.depth
            for l in range(1, depth + 1):
                act = back.spec.activations[l - 1].name
                plot = visit.page.locator(f'#activation-plots svg[data-layer="{l}"]')
                assert plot.get_attribute("role") == "img"
                assert plot.get_attribute("aria-label").startswith(f"g[{l}] = {act}(z), plotted for z from")
                assert plot.locator("polyline.curve").count() >= 1
                assert plot.locator("line.axis").count() == 2  # z = 0 and g = 0 both in view
                marks = plot.locator("circle.mark")
                assert marks.count() == back.spec.sizes[l]
                for k in range(back.spec.sizes[l]):
                    mark = plot.locator(f'circle.mark[data-mark="{l}:{k + 1}"]')
                    z, a = float(mark.get_attribute("data-z")), float(mark.get_attribute("data-a"))
                    assert abs(z - passed.Z[l][k, 0]) <= err_Z[l][k, 0], (l, k, z)
                    assert abs(a - passed.A[l][k, 0]) <= err_A[l][k, 0], (l, k, a)
                figure = visit.page.locator("#activation-plots figure").nth(l - 1)
                assert ADVICE[(act, l < depth)] in figure.locator(".advice").inner_text()
        assert not visit.errors, visit.errors
        section_shot(visit, f"plots-{name}-desktop")


def test_the_batch_view_fits_a_phone_and_scrolls_in_its_own_boxes_by_keyboard(browser, served, models):
    with Visit(browser, served, PHONE) as visit:
        visit.choose("softmax_4_8_8_3")
        examples = [[k / 10, -k / 5, 0.3, 1.0 - k] for k in range(12)]
        box = visit.page.get_by_label("CSV rows, one example per row")
        box.focus()
        visit.page.keyboard.press("Control+A")
        visit.page.keyboard.type("\n".join(", ".join(map(repr, x)) for x in examples))
        visit.page.locator('[data-matrix="mat-X"][data-shape="4x12"]').wait_for(state="attached")
        settle(visit)
        width = visit.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page is {width} px wide at phone width"
        # From the batch box, Tab reaches the batch view's boxes, and the arrow keys scroll one sideways.
        labels = []
        for _ in range(8):
            visit.page.keyboard.press("Tab")
            labels.append(visit.page.evaluate("document.activeElement.getAttribute('aria-label')"))
            if labels[-1] == "Z[1] = W[1]X + b[1]":
                break
        assert labels[-2:] == ["X", "Z[1] = W[1]X + b[1]"], labels
        region = visit.page.locator('[aria-label="Z[1] = W[1]X + b[1]"]')
        assert region.evaluate("r => r.scrollWidth > r.clientWidth")  # wider than the phone: it scrolls
        visit.page.keyboard.press("ArrowRight")
        scrolled = []
        for _ in range(40):  # the browser scrolls smoothly, over a few frames: until it stops
            scrolled.append(region.evaluate("r => r.scrollLeft"))
            if len(scrolled) > 1 and scrolled[-1] == scrolled[-2] > 0:
                break
            visit.page.wait_for_timeout(50)
        assert scrolled[-1] > 0, scrolled
        region.evaluate("r => r.scrollTo({left: 0, behavior: 'instant'})")  # for the screenshot
        back, passed, err_Z, err_A = batch_oracle(models, "softmax_4_8_8_3", examples)
        cells = visit.cells()
        for j in range(12):
            for i in range(3):
                key = f"mat-A3-{i + 1}-{j + 1}"
                assert_shown_within_bound(cells[key], float(passed.A[3][i, j]), float(err_A[3][i, j]), 9, key)
        visit.screenshot("batch-softmax_4_8_8_3-phone")
        section_shot(visit, "batch-softmax_4_8_8_3-phone")


def test_without_onnxruntime_web_the_loop_runs_in_float64_beside_the_oracle(browser, models, tmp_path):
    with serving(models, "--ort-web-dir", str(tmp_path)) as process, Visit(browser, process) as visit:
        visit.choose("mlp_3_4_1_sigmoid")
        examples = [x[:3] for x in BATCH]
        show_batch(visit, examples)
        loop = visit.page.locator("#batch-loop-diff")
        assert "onnxruntime-web is not here: the loop ran in float64" in loop.inner_text()
        assert float(loop.get_attribute("data-diff")) <= 1e-15
        _, passed, _, _ = batch_oracle(models, "mlp_3_4_1_sigmoid", examples)
        cells = visit.cells()
        for j in range(len(examples)):
            for i in range(4):
                key = f"mat-Z1-{i + 1}-{j + 1}"  # the oracle's, shown to 9 digits as for a float32 model
                assert_shown_within_bound(cells[key], float(passed.Z[1][i, j]), 1e-15, 9, key)
        assert visit.page.locator('#activation-plots svg[data-layer="2"] circle.mark').count() == 1
        section_shot(visit, "batch-without-ort-desktop")


def test_edited_weights_give_the_batch_and_the_plots_of_the_oracle_for_them(browser, served, models):
    name = "columns"  # tanh, sigmoid; the examples in columns
    with Visit(browser, served) as visit:
        visit.choose(name)
        examples = [x[:3] for x in BATCH]
        show_batch(visit, examples)
        back = read_file(models / name / "1" / "model.onnx")
        weights, biases = [W.copy() for W in back.spec.weights], [b.copy() for b in back.spec.biases]
        for label, value in (("W[1][2,3]", 1.5), ("b[2][1]", -0.25)):
            visit.page.locator(f'input.param[aria-label="{label}"]').fill(str(value))
            settle(visit)
        weights[0][1, 2], biases[1][0, 0] = 1.5, -0.25
        spec = dataclasses.replace(back.spec, weights=tuple(weights), biases=tuple(biases))
        X = np.asarray(examples, dtype=np.float64).T
        passed = forward(spec, X)
        err_Z, err_A = layer_bounds(spec, X, TOLERANCES[back.dtype].unit, passed)
        cells = visit.cells()
        assert cells["mat-W1-2-3"] == "1.50000000" and cells["mat-b2-1-5"] == "-0.250000000"
        for l in (1, 2):
            for i in range(spec.sizes[l]):
                for j in range(len(examples)):
                    for kind, values, bounds in (("Z", passed.Z, err_Z), ("A", passed.A, err_A)):
                        key = f"mat-{kind}{l}-{i + 1}-{j + 1}"
                        assert_shown_within_bound(cells[key], values[l][i, j], bounds[l][i, j], 9, key)
        assert visit.page.locator("#batch-loop-diff").get_attribute("data-diff") == "0"
        assert "within its error bound" in visit.page.locator("#batch-oracle-verdict").inner_text()
        x = [0.1, 0.2, 0.3]  # the page's first x
        one = forward(spec, np.asarray(x, dtype=np.float64).reshape(3, 1))
        mark = visit.page.locator('#activation-plots circle.mark[data-mark="2:1"]')
        assert float(mark.get_attribute("data-z")) == pytest.approx(one.Z[2][0, 0], abs=1e-6)
        asked = [url for method, url, _ in visit.requests if method == "POST" and url.endswith("/network/oracle")]
        assert asked and all(url.startswith(visit.origin + "/") for _, url, _ in visit.requests)


def test_invalid_input_marks_the_batch_view_and_the_plots_stale(browser, served):
    with Visit(browser, served) as visit:
        visit.choose("mlp_3_4_1")
        box = visit.page.get_by_label("CSV rows, one example per row")
        box.fill("1, 2, 3\n4, five, 6")
        visit.page.locator("#batch-view-out.stale").wait_for(state="attached")
        assert box.get_attribute("aria-invalid") == "true"
        assert "batch row 2" in visit.page.locator("#batch-view-error").inner_text()
        show_batch(visit, [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
        assert box.get_attribute("aria-invalid") is None
        assert visit.page.locator("#batch-view-out.stale").count() == 0
        visit.page.get_by_label("x1", exact=True).fill("")
        visit.page.locator("#activation-plots.stale").wait_for(state="attached")
        assert visit.page.locator("#batch-view-out.stale").count() == 1
        section_shot(visit, "stale-mlp_3_4_1-desktop")
        visit.page.get_by_label("x1", exact=True).fill("0.5")
        settle(visit)
        assert visit.page.locator(".stale").count() == 0
        mark = visit.page.locator('#activation-plots circle.mark[data-mark="1:1"]')
        assert mark.get_attribute("data-z") is not None


def test_an_edit_during_a_long_batch_is_what_the_batch_view_shows(browser, served, models):
    """A batch of 1,000 examples (1,000 runs for the loop) is still being computed when W changes: the
    view ends showing the batch for the new W, its loop and matrix form alike, its columns listed in part."""
    with Visit(browser, served) as visit:
        visit.choose("mlp_3_4_1")
        rng = np.random.default_rng(20)
        examples = np.round(rng.uniform(-3, 3, (1000, 3)), 2).tolist()
        visit.page.get_by_label("CSV rows, one example per row").fill(
            "\n".join(", ".join(map(repr, x)) for x in examples)
        )
        visit.page.get_by_role("button", name="Ask the server").click()  # the batch view starts at once
        visit.page.locator('input.param[aria-label="W[1][1,1]"]').fill("2")
        visit.page.locator('[data-matrix="mat-W1"] [data-cell="mat-W1-1-1"]', has_text="2.00000000").wait_for()
        settle(visit)
        back = read_file(models / "mlp_3_4_1" / "1" / "model.onnx")
        weights = [W.copy() for W in back.spec.weights]
        weights[0][0, 0] = 2.0
        spec = dataclasses.replace(back.spec, weights=tuple(weights))
        X = np.asarray(examples, dtype=np.float64).T
        passed = forward(spec, X)
        err_Z, err_A = layer_bounds(spec, X, TOLERANCES[back.dtype].unit, passed)
        cells = visit.cells()
        assert visit.page.locator('[data-matrix="mat-Z1"]').get_attribute("data-shape") == "4x1000"
        assert "The first 64 of 1000 columns" in visit.page.locator('[data-matrix="mat-Z1"]').inner_text()
        assert "mat-Z1-1-65" not in cells
        for j in range(64):
            for i in range(4):
                key = f"mat-Z1-{i + 1}-{j + 1}"
                assert_shown_within_bound(cells[key], passed.Z[1][i, j], err_Z[1][i, j], 9, key)
            key = f"mat-A2-1-{j + 1}"
            assert_shown_within_bound(cells[key], passed.A[2][0, j], err_A[2][0, j], 9, key)
        assert visit.page.locator("#batch-loop-diff").get_attribute("data-diff") == "0"
        assert "within its error bound" in visit.page.locator("#batch-oracle-verdict").inner_text()


def test_a_leaky_relu_is_plotted_with_its_slope(browser, tmp_path):
    repository = tmp_path / "models"
    rng = np.random.default_rng(5)
    spec = random_spec(rng, (2, 6, 1), (Activation("leaky_relu", 0.2), Activation("identity")))
    build_into(repository, "leaky", spec)
    with serving(repository) as process, Visit(browser, process) as visit:
        visit.choose("leaky")
        x = [-1.5, 2.0]
        visit.type_x(x)
        settle(visit)
        passed = forward(spec, np.asarray(x, dtype=np.float64).reshape(2, 1))
        plot = visit.page.locator('#activation-plots svg[data-layer="1"]')
        assert plot.get_attribute("aria-label").startswith("g[1] = leaky_relu(z; 0.2), plotted")
        for k in range(6):
            mark = plot.locator(f'circle.mark[data-mark="1:{k + 1}"]')
            z, a = float(mark.get_attribute("data-z")), float(mark.get_attribute("data-a"))
            assert z == pytest.approx(passed.Z[1][k, 0], abs=1e-5) and a == pytest.approx(passed.A[1][k, 0], abs=1e-5)
        figure = visit.page.locator("#activation-plots figure").first
        assert ADVICE[("leaky_relu", True)] in figure.locator(".advice").inner_text()
        assert "A[1] = leaky_relu(Z[1]; 0.2)" in visit.page.locator("#batch-view").inner_text()
        section_shot(visit, "plots-leaky-desktop")
