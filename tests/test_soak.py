"""The soak, in its quick mode: steady load, one worker killed, only its calls in flight may fail."""

import json
import subprocess
import sys

from harness import ROOT


def test_quick_soak_loses_only_the_killed_workers_calls(tmp_path):
    command = [sys.executable, "bench/soak.py", "--quick", "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    soak = json.loads((tmp_path / "soak-quick.json").read_text())
    assert soak["requests"] > 100
    assert set(soak["failures"]) <= {"UNAVAILABLE"}, soak["failures"]
    sent = soak["failed_at_s"]
    window = f"failures sent {min(sent, default=0)}-{max(sent, default=0)} s, kill at {soak['killed_worker_at_s']} s"
    assert sum(soak["failures"].values()) <= soak["concurrency"], window  # at most what was in flight
    assert all(t <= soak["killed_worker_at_s"] + 0.5 for t in sent), window  # none after the restart
    assert soak["workers_after"] == 2
    assert soak["memory_end_mb"] - soak["memory_start_mb"] <= soak["memory_bound_mb"]
