"""How many CPUs this process may really use: the CPU quota of its cgroup, not the node's core count.

A container limited to 1 CPU on a 64-core node still sees 64 cores in os.cpu_count(); forking a
worker per core there costs 64 x ~76 MB and buys only CFS throttling. The quota is read as the
runtimes that know containers read it (Go's GOMAXPROCS, uber's automaxprocs, the JVM): cgroup v2's
`cpu.max` ("max" or "QUOTA PERIOD"), or v1's `cpu.cfs_quota_us` (-1: none) over `cpu.cfs_period_us`,
at every level from this process's cgroup up to the mount's root, keeping the smallest (a parent's
limit binds its children). Inside a container the path /proc/self/cgroup names may not exist under
the mount (cgroup v1, or v2 without a cgroup namespace): the levels that do exist are read, and the
mount's root is the container's own cgroup.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def cpu_quota(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> float | None:
    """The CPUs this process's cgroup quota allows (e.g. 1.5), or None when nothing limits it."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None  # not Linux, or no procfs
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: "0::/path", one unified hierarchy
            limits += [_v2_limit(folder) for folder in _levels(root, path)]
        elif "cpu" in controllers.split(","):  # cgroup v1: "4:cpu,cpuacct:/path", mounted on its own
            mount = next((root / name for name in (controllers, "cpu", "cpu,cpuacct") if (root / name).is_dir()), None)
            if mount is not None:
                limits += [_v1_limit(folder) for folder in _levels(mount, path)]
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def available_cpus(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int:
    """Whole CPUs to plan workers for: the cgroup quota rounded down (at least 1), within the cores
    this process may run on."""
    try:
        cores = len(os.sched_getaffinity(0))  # a cpuset (docker --cpuset-cpus) narrows these
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cpu_quota(root, self_cgroup)
    if quota is None:
        return cores
    # Down, as automaxprocs rounds: a worker beyond the quota adds no CPU time, only throttling
    # pauses (the quota spent early in each period) that land on every worker's latency.
    return max(1, min(cores, math.floor(quota)))


def _levels(mount: Path, path: str) -> list[Path]:
    """The folders from the cgroup's own up to the mount's root that exist here."""
    parts = [part for part in path.split("/") if part]
    folders = [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]
    return [folder for folder in folders if folder.is_dir()]


def _v2_limit(folder: Path) -> float | None:
    """CPUs allowed by cpu.max in folder ("max 100000": none)."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None  # the root cgroup has no cpu.max
    return None if quota == "max" else int(quota) / int(period)


def _v1_limit(folder: Path) -> float | None:
    """CPUs allowed by cpu.cfs_quota_us / cpu.cfs_period_us in folder (-1: none)."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
