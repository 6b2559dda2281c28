"""How many CPUs and how much memory this process may really use: its cgroup's limits, not the node's.

A container limited to 1 CPU on a 64-core node still sees 64 cores in os.cpu_count(); forking a
worker per core there costs 64 x ~76 MB and buys only CFS throttling. The quota is read as the
runtimes that know containers read it (Go's GOMAXPROCS, uber's automaxprocs, the JVM): cgroup v2's
`cpu.max` ("max" or "QUOTA PERIOD"), or v1's `cpu.cfs_quota_us` (-1: none) over `cpu.cfs_period_us`,
at every level from this process's cgroup up to the mount's root, keeping the smallest (a parent's
limit binds its children). Inside a container the path /proc/self/cgroup names may not exist under
the mount (cgroup v1, or v2 without a cgroup namespace): the levels that do exist are read, and the
mount's root is the container's own cgroup. The memory limit (v2's `memory.max`, v1's
`memory.limit_in_bytes`) is read the same way; it sizes what a worker may buffer by default.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def cpu_quota(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> float | None:
    """The CPUs this process's cgroup quota allows (e.g. 1.5), or None when nothing limits it."""
    return _smallest("cpu", _v2_limit, _v1_limit, root, self_cgroup)


def memory_limit(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int | None:
    """The bytes of memory this process's cgroup may use (docker --memory, a pod's limits.memory),
    or None when nothing limits it."""
    return _smallest("memory", _v2_memory, _v1_memory, root, self_cgroup)


def _smallest(controller: str, v2_read, v1_read, root: Path, self_cgroup: Path):
    """The smallest limit of `controller` over the cgroup's levels, read by v2_read or v1_read."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None  # not Linux, or no procfs
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: "0::/path", one unified hierarchy
            limits += [v2_read(folder) for folder in _levels(root, path)]
        elif controller in controllers.split(","):  # v1: "4:cpu,cpuacct:/path", each mounted on its own
            names = (controllers, controller, "cpu,cpuacct")
            mount = next((root / name for name in names if (root / name).is_dir()), None)
            if mount is not None:
                limits += [v1_read(folder) for folder in _levels(mount, path)]
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


def _v2_memory(folder: Path) -> int | None:
    """Bytes allowed by memory.max in folder ("max": none)."""
    try:
        text = (folder / "memory.max").read_text().strip()
    except OSError:
        return None
    return None if text == "max" else int(text)


def _v1_memory(folder: Path) -> int | None:
    """Bytes allowed by memory.limit_in_bytes in folder (v1 writes "no limit" as a page-rounded 2**63-1)."""
    try:
        limit = int((folder / "memory.limit_in_bytes").read_text())
    except (OSError, ValueError):
        return None
    return None if limit >= 2**62 else limit
