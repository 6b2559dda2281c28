"""`forwardpass show`: the layer table and the drawing of the network."""

import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np

from forwardpass.builder.readback import read_file
from forwardpass.builder.spec import Activation
from forwardpass.show import NEGATIVE, POSITIVE, layer_table, network_svg

from harness import ROOT
from numerics import random_spec

SVG = "{http://www.w3.org/2000/svg}"


def test_table_lists_every_layer_and_the_totals():
    table = layer_table(read_file(ROOT / "models/mlp_3_4_1/1/model.onnx"))
    assert table.splitlines()[0] == "network 3-4-1, rows layout, float32, opset 17, producer forwardpass"
    assert "    1      4  relu" in table and "    2      1  sigmoid" in table
    assert table.endswith("total parameters: 21")


def test_drawing_has_a_circle_per_unit_and_an_edge_per_weight():
    spec = random_spec(np.random.default_rng(0), (3, 5, 2), (Activation("tanh"), Activation("softmax")))
    root = ET.fromstring(network_svg(spec))
    assert len(root.findall(f"{SVG}circle")) == 3 + 5 + 2
    lines = root.findall(f"{SVG}line")
    assert len(lines) == 3 * 5 + 5 * 2
    signs = [w >= 0 for W in spec.weights for w in W.ravel()]
    assert [line.get("stroke") for line in lines] == [POSITIVE if s else NEGATIVE for s in signs]
    widths = [float(line.get("stroke-width")) for line in lines]
    largest = int(np.argmax([abs(w) for W in spec.weights for w in W.ravel()]))
    assert widths[largest] == max(widths)
    assert "layer 2: softmax" in network_svg(spec)


def test_show_command_writes_the_drawing(tmp_path):
    command = [sys.executable, "-m", "forwardpass", "show", "models/mlp_3_4_1_sigmoid/1/model.onnx", "--svg"]
    result = subprocess.run([*command, str(tmp_path / "net.svg")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "sigmoid" in result.stdout and ET.parse(tmp_path / "net.svg").getroot().tag == f"{SVG}svg"
    wrong = subprocess.run([*command, str(tmp_path / "net.png")], cwd=ROOT, capture_output=True, text=True)
    assert wrong.returncode == 2 and "name the file .svg" in wrong.stderr
