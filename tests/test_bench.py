"""The benchmarks run, in their quick modes, so they cannot rot; their numbers are not asserted."""

import json
import re
import subprocess
import sys

import pytest

from harness import ROOT, need_tool


def test_local_bench_quick(tmp_path):
    result = subprocess.run([sys.executable, "bench/local.py", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "local-quick.json").read_text())
    assert {c["n"] for c in report["throughput"]["rows"]} == {1, 256, 4096, 65536}
    assert "Against the targets" in (tmp_path / "local-quick.md").read_text()


def test_serve_bench_quick(tmp_path):
    need_tool("h2load", "nghttp2-client")  # its HTTP cells
    result = subprocess.run([sys.executable, "bench/serve.py", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "serve-quick.json").read_text())
    cells = {(c["target"].split(",")[0], c["cell"], c["concurrency"]) for c in report["cells"]}
    assert ("forwardpass", "batch 1", 64) in cells and ("bare gRPC", "65,536 rows", 1) in cells
    assert all(sum(c["errors"].values()) == 0 for c in report["cells"])
    assert report["profile"]["infer_us"] > 0
    markdown = (tmp_path / "serve-quick.md").read_text()
    assert "## Against the targets" in markdown and "## One request, end to end" in markdown


def test_every_headline_a_bench_writes_has_one_home_in_the_docs():
    """`--update-docs` puts each bench's headline between its markers in the one doc that holds them."""
    written = {
        name
        for script in (ROOT / "bench").glob("*.py")
        for name in re.findall(r'replace_section\("([\w-]+)"', script.read_text())
    }
    assert written == {"local-headline", "serve-headline", "soak", "capacity"}
    docs = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for name in written:
        homes = [
            doc.name for doc in docs if f"<!-- {name} -->" in doc.read_text() and f"<!-- /{name} -->" in doc.read_text()
        ]
        assert len(homes) == 1, (name, homes)


def test_raw_results_stay_local():
    """The benches write their raw logs to bench/results/*.json; only the summaries are committed."""
    need_tool("git", "git")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "bench/results"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip(f"git cannot list this checkout: {tracked.stderr.strip()}")
    names = tracked.stdout.split()
    assert names and all(name.endswith(".md") for name in names), names
