"""bench/capacity.py runs in its quick mode, so the deploy guide's capacity figures can always be
remade; its numbers are not asserted, only that every cell answered and the plan adds up."""

import json
import math
import os
import subprocess
import sys

import pytest

from harness import ROOT


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pins the server to one core, the load to another")
def test_capacity_bench_quick(tmp_path):
    command = [sys.executable, "bench/capacity.py", "--quick", "--runs", "1", "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "capacity-quick.json").read_text())
    assert all(cell["server_cpu_ms_per_req"] > 0 and cell["errors"] == 0 for cell in report["cells"])
    for plan in report["plan"]:
        assert plan["busy_cores"] == pytest.approx(plan["req_per_s"] * plan["cpu_ms_per_req"] / 1000)
        assert plan["pods"] == max(2, math.ceil(plan["cores"] / 2))
    assert "| 20,000 req/s of batch 1 over gRPC |" in (tmp_path / "capacity-quick.md").read_text()
