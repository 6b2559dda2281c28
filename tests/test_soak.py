"""The soak, in its quick mode: steady load, one worker killed; only calls around the kill may fail."""

import json
import subprocess
import sys

from harness import ROOT


def test_quick_soak_loses_only_calls_around_the_kill(tmp_path):
    command = [sys.executable, "bench/soak.py", "--quick", "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    soak = json.loads((tmp_path / "soak-quick.json").read_text())
    assert soak["requests"] > 100
    assert set(soak["failures"]) <= {"UNAVAILABLE"}, soak["failures"]
    kill, sent = soak["killed_worker_at_s"], soak["failed_at_s"]
    window = f"failures sent {min(sent, default=0)}-{max(sent, default=0)} s, kill at {kill} s"
    # In flight on the killed worker (sent up to a slow call's latency before it), or sent while a
    # client's reconnect waits out its backoff; nothing after that.
    assert all(kill - 1.0 <= t <= kill + soak["failure_window_s"] for t in sent), window
    assert soak["workers_after"] == 2
    assert soak["memory_end_mb"] - soak["memory_start_mb"] <= soak["memory_bound_mb"]
