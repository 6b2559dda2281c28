"""`forwardpass check` against the weights a file was built from: a file whose weights drifted fails."""

import re
from pathlib import Path

import numpy as np
import pytest

from forwardpass.builder.export import export_file, export_to_repository, write_atomic
from forwardpass.builder.graph import ExportOptions
from forwardpass.builder.npz import npz_bytes
from forwardpass.builder.spec import Activation, NetworkSpec
from forwardpass.layout import MODEL_FILE, WEIGHTS_FILE
from forwardpass.verify import intended_weights, verify

from harness import ROOT, assert_one_error_line, run_cli
from numerics import random_spec

COMMITTED = sorted(path.relative_to(ROOT) for path in (ROOT / "models").glob("*/*/model.onnx"))
RELU_SIGMOID = (Activation("relu"), Activation("sigmoid"))


def true_and_drifted(sizes=(3, 4, 1)) -> tuple[NetworkSpec, NetworkSpec]:
    """A spec, and the same one with W1[0,0] 10% off."""
    spec = random_spec(np.random.default_rng(7), sizes, RELU_SIGMOID)
    weights = [w.copy() for w in spec.weights]
    weights[0][0, 0] *= 1.1
    return spec, NetworkSpec(spec.sizes, spec.activations, tuple(weights), spec.biases)


def write_npz(path: Path, spec: NetworkSpec) -> Path:
    """The spec's W and b as an .npz, as `build` writes them."""
    write_atomic(path, npz_bytes(spec))
    return path


@pytest.mark.parametrize("model", COMMITTED, ids=str)
def test_committed_models_match_the_weights_beside_them(model):
    result = run_cli("check", model)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"weights: {model.with_name(WEIGHTS_FILE)} (beside the model)" in result.stdout
    assert "the file computes these weights" in result.stdout and result.stdout.strip().endswith("ok")


def test_check_leads_with_the_worst_errors_share_of_the_bound_as_the_page_does():
    """The page writes |error| / bound as a percentage; a bare relative error of 0.0346 read as a 3.5% error."""
    model = ROOT / "models" / "mlp_3_4_1" / "1" / MODEL_FILE
    result = run_cli("check", model.relative_to(ROOT), "--provider", "cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    expected = verify(model, "cpu", weights=intended_weights(model))
    lines = result.stdout.splitlines()
    for batch, c in expected.results.items():
        (line,) = [line for line in lines if line.startswith(f"batch {batch}: ")]
        share = f"{100 * c.worst:.2g}%"  # web/page.js: (100 * diff / bound).toPrecision(2) + '%'
        assert line.startswith(f"batch {batch}: worst error: {share} of the float32 bound, within tolerance"), line
        assert f"max rel error {c.max_rel:.3g} relative to |oracle's y|" in line
    assert "the relative error is |error| / |oracle's y|, large where y is near 0" in result.stdout
    assert re.search(r"against the weights: worst error: [\d.]+% of the float32 bound", result.stdout)


@pytest.mark.parametrize("options", [ExportOptions(), ExportOptions("columns", "float64")], ids=["float32", "float64"])
def test_a_model_whose_weights_drifted_from_its_npz_fails(tmp_path, options):
    spec, drifted = true_and_drifted()
    written = export_to_repository(drifted, options, tmp_path / "models", "drifted")
    write_npz(written.weights, spec)  # the weights it should hold
    result = run_cli("check", written.model)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count("within tolerance (") == 3  # onnxruntime agrees with the file's own weights
    assert "against the weights: " in result.stdout and "OUTSIDE tolerance in batch" in result.stdout
    assert result.stdout.strip().endswith(f"FAILED: the file does not compute the weights in {written.weights}")


@pytest.mark.parametrize(("weights", "code"), [("true", 0), ("drifted", 1)])
def test_weights_flag_checks_a_file_outside_a_repository(tmp_path, weights, code):
    spec, drifted = true_and_drifted()
    model = export_file(spec, ExportOptions(), tmp_path / "net.onnx").model
    npz = write_npz(tmp_path / f"{weights}.npz", spec if weights == "true" else drifted)
    result = run_cli("check", model, "--weights", npz)
    assert result.returncode == code, result.stdout + result.stderr
    assert f"weights: {npz} (given with --weights)" in result.stdout


def test_a_file_outside_a_repository_is_compared_with_its_own_weights_only(tmp_path):
    spec, drifted = true_and_drifted()
    model = export_file(drifted, ExportOptions(), tmp_path / "copies" / MODEL_FILE).model
    write_npz(tmp_path / "copies" / WEIGHTS_FILE, spec)  # beside it, but not in a repository's version folder
    result = run_cli("check", model)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weights: none known; the file is compared with its own weights only" in result.stdout


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ((3, 5, 1), "layer 1: W1 is (5, 3) in the weights but (4, 3) in the model"),
        ((3, 4, 2, 1), "layer 2: W2 is (2, 4) in the weights but (1, 4) in the model"),
        ((3, 4), "layer 2: W2 is absent in the weights but (1, 4) in the model"),
    ],
)
def test_weights_of_another_shape_are_one_line_naming_the_layer(tmp_path, sizes, match):
    model = export_file(true_and_drifted()[0], ExportOptions(), tmp_path / "net.onnx").model
    npz = write_npz(tmp_path / "other.npz", random_spec(np.random.default_rng(0), sizes, ["relu"] * len(sizes[1:])))
    assert_one_error_line(run_cli("check", model, "--weights", npz), f"{npz}: {match}")


def test_missing_weights_file_is_one_line():
    assert_one_error_line(run_cli("check", COMMITTED[0], "--weights", "missing.npz"), "missing.npz: no such file")
