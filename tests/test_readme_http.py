"""The README's "Calling it over HTTP" examples, run as a reader would run them against `make run`,
with its ports (HTTP 8000, gRPC 8001) replaced by a real server's: each runs, and each prints the
committed model's answer. The tritonclient and KServe examples run in a subprocess of their own,
since neither package can share a process with our protobuf stubs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from urllib.parse import urlsplit

import numpy as np
import pytest

from forwardpass.builder.oracle import forward
from forwardpass.builder.readback import read_file

from harness import ROOT, need_tool

SECTION = "### Calling it over HTTP"
EXAMPLE_INPUT = "[[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]]"
NUMBER = re.compile(r"-?\d+\.\d+(?:[eE][-+]?\d+)?")


def section_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block in the section, which ends at the next heading."""
    lines = text.splitlines()
    start = lines.index(SECTION) + 1
    blocks, fence, body = [], None, []
    for line in lines[start:]:
        if fence is None and line.startswith("#"):
            break
        if line.startswith("```"):
            if fence is None:
                fence, body = line[3:].strip(), []
            else:
                blocks.append((fence, "\n".join(body) + "\n"))
                fence = None
        elif fence is not None:
            body.append(line)
    return blocks


BLOCKS = section_blocks((ROOT / "README.md").read_text())
RUNNABLE = [(language, code) for language, code in BLOCKS if language in ("sh", "python")]
SHOWN = [code for language, code in BLOCKS if language == "json"]


def example_answer() -> np.ndarray:
    """The committed mlp_3_4_1's answer to the README's input, from the float64 oracle."""
    spec = read_file(ROOT / "models" / "mlp_3_4_1" / "1" / "model.onnx").spec
    x = np.array(json.loads(EXAMPLE_INPUT), np.float32)
    return forward(spec, x.T.astype(np.float64)).output.T.ravel()


def on_server(code: str, server) -> str:
    """The example aimed at the test server: make run's ports replaced by the server's."""
    http = urlsplit(server.http_url)
    assert "127.0.0.1:8000" in code, "an example that does not call make run's HTTP port"
    return code.replace("127.0.0.1:8000", f"127.0.0.1:{http.port}").replace("127.0.0.1:8001", server.url)


def run(language: str, code: str, cwd) -> subprocess.CompletedProcess:
    if language == "sh":
        if "curl" in code:
            need_tool("curl", "curl")
        command = ["bash", "-c", "set -euo pipefail\n" + code]
    else:
        command = [sys.executable, "-c", code]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=180)


def test_the_section_has_the_examples():
    assert [language for language, _ in RUNNABLE] == ["sh", "sh", "python", "python"]
    assert "tritonclient.http" in RUNNABLE[2][1] and "InferenceRESTClient" in RUNNABLE[3][1]
    assert all(EXAMPLE_INPUT in code for _, code in RUNNABLE[1:])
    assert len(SHOWN) == 1


@pytest.mark.parametrize(("language", "code"), RUNNABLE, ids=[f"{i}-{lang}" for i, (lang, _) in enumerate(RUNNABLE)])
def test_example_runs_and_prints_the_answer(server, tmp_path, language, code):
    result = run(language, on_server(code, server), tmp_path)
    assert result.returncode == 0, result.stderr
    if "/infer" not in code and "infer(" not in code:  # health and metadata
        assert re.search(r'"ready":\s*true', result.stdout), result.stdout
        meta = json.loads(result.stdout.splitlines()[1])
        assert meta["name"] == "mlp_3_4_1" and meta["platform"] == "onnxruntime_onnx"
        return
    printed = np.array([float(n) for n in NUMBER.findall(result.stdout)])
    expected = example_answer()
    assert printed.shape == expected.shape, result.stdout
    assert np.allclose(printed, expected, rtol=1e-6, atol=1e-7), (printed, expected)


def test_the_answer_shown_is_the_servers(server, tmp_path):
    (curl,) = [code for language, code in RUNNABLE if language == "sh" and "/infer" in code]
    result = run("sh", on_server(curl, server), tmp_path)
    assert result.returncode == 0, result.stderr
    answer, shown = json.loads(result.stdout), json.loads(SHOWN[0])
    data, shown_data = answer["outputs"][0].pop("data"), shown["outputs"][0].pop("data")
    assert answer == shown
    # the last bit of a float32 Gemm may differ between processors
    assert np.allclose(data, shown_data, rtol=1e-6, atol=0) and np.allclose(data, example_answer(), rtol=1e-6)
