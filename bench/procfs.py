"""What /proc says about the servers under test: their process trees, CPU time and resident memory."""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds of these processes so far (those gone meanwhile count nothing)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def rss_mb(pids: list[int]) -> list[float]:
    """The resident memory of each of these processes, in MB."""
    sizes = []
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return sizes


def machine_busy() -> tuple[float, float]:
    """Busy and total CPU ticks of the whole machine so far: two readings give the share in between."""
    fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def machine_cores(before: tuple[float, float], after: tuple[float, float]) -> float:
    """How many of the machine's cores were busy, on average, between two machine_busy() readings."""
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def cpu_ns(pids: list[int]) -> int:
    """CPU nanoseconds these processes' threads have run so far (/proc/PID/task/TID/schedstat): finer than
    cpu_seconds' clock ticks, for windows of a fraction of a second. A thread gone meanwhile counts nothing."""
    total = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except OSError:
                continue
    return total
