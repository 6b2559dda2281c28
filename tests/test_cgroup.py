"""`--workers` defaults to the CPUs the container's cgroup quota allows, read from fake cgroup trees
laid out as cgroup v2 and v1 mount them, on a host and inside a container."""

import os

import pytest

from forwardpass.server.cgroup import available_cpus, cpu_quota, memory_limit
from forwardpass.server.options import ServeOptions

CORES = len(os.sched_getaffinity(0))


def cgroup_tree(tmp_path, self_cgroup: str, files: dict[str, str]):
    """A fake /sys/fs/cgroup holding `files` (path -> text) and a fake /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text + "\n")
    (tmp_path / "self").write_text(self_cgroup + "\n")
    return root, tmp_path / "self"


@pytest.mark.parametrize(
    "self_cgroup, files, quota",
    [
        # cgroup v2 in a container (its own cgroup namespace): the mount's root is the pod's cgroup
        ("0::/", {"cpu.max": "150000 100000"}, 1.5),
        ("0::/", {"cpu.max": "max 100000"}, None),
        # v2 on a host: the process's cgroup and its parents; the smallest limit binds
        ("0::/kubepods/pod1/c1",
         {"kubepods/pod1/cpu.max": "200000 100000", "kubepods/pod1/c1/cpu.max": "max 100000"}, 2.0),
        ("0::/a/b", {"a/cpu.max": "50000 100000", "a/b/cpu.max": "300000 100000"}, 0.5),
        # v1 inside a container: /proc names the host's path, which does not exist under the mount
        ("4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc",
         {"cpu,cpuacct/cpu.cfs_quota_us": "250000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, 2.5),
        ("4:cpu,cpuacct:/docker/abc", {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
         None),
        # v1 with the controllers mounted apart ("cpu" beside "cpuacct")
        ("3:cpuacct,cpu:/x", {"cpu/x/cpu.cfs_quota_us": "100000", "cpu/x/cpu.cfs_period_us": "100000"}, 1.0),
        # no cpu controller at all
        ("1:name=systemd:/", {}, None),
    ],
)  # fmt: skip
def test_the_quota_is_read_as_cgroup_v2_and_v1_write_it(tmp_path, self_cgroup, files, quota):
    assert cpu_quota(*cgroup_tree(tmp_path, self_cgroup, files)) == quota


@pytest.mark.parametrize(
    "cpu_max, workers",
    [
        ("100000 100000", 1),
        ("50000 100000", 1),  # half a CPU still needs one worker
        ("150000 100000", 1),  # down: a second worker would only be throttled
        ("200000 100000", min(2, CORES)),
        ("6400000 100000", CORES),  # a quota above the cores this process may use is no help
        ("max 100000", CORES),
    ],
)
def test_workers_follow_the_quota_rounded_down_within_the_cores(tmp_path, cpu_max, workers):
    assert available_cpus(*cgroup_tree(tmp_path, "0::/", {"cpu.max": cpu_max})) == workers


def test_without_procfs_every_core_counts(tmp_path):
    assert available_cpus(tmp_path / "none", tmp_path / "no-such-file") == CORES


def test_the_serve_default_is_the_cpus_this_process_may_use():
    assert ServeOptions().workers == available_cpus() >= 1


@pytest.mark.parametrize(
    "self_cgroup, files, limit",
    [
        ("0::/", {"memory.max": "1073741824"}, 2**30),  # v2 in a container: docker --memory 1g
        ("0::/", {"memory.max": "max"}, None),
        ("0::/kubepods/p/c", {"kubepods/p/memory.max": "536870912", "kubepods/p/c/memory.max": "max"}, 2**29),
        ("9:memory:/docker/abc", {"memory/memory.limit_in_bytes": "1073741824"}, 2**30),  # v1 in a container
        ("9:memory:/docker/abc", {"memory/memory.limit_in_bytes": "9223372036854771712"}, None),  # v1's "no limit"
        ("1:name=systemd:/", {}, None),
    ],
)  # fmt: skip
def test_the_memory_limit_is_read_as_cgroup_v2_and_v1_write_it(tmp_path, self_cgroup, files, limit):
    assert memory_limit(*cgroup_tree(tmp_path, self_cgroup, files)) == limit


def test_the_body_budget_is_a_quarter_of_each_workers_share_of_a_memory_limit(monkeypatch):
    # 2 workers in 1 GiB: 128 MiB each; in 8 GiB the default 256 MiB; never below twice the largest message.
    cases = [(2**30, 2, 64, 128), (8 * 2**30, 2, 64, 256), (2**29, 4, 64, 128), (2**29, 4, 8, 32), (None, 1, 64, 256)]
    for limit, workers, max_message_mb, budget_mb in cases:
        monkeypatch.setattr("forwardpass.server.options.memory_limit", lambda limit=limit: limit)
        options = ServeOptions(workers=workers, max_message_mb=max_message_mb)
        assert options.http_body_budget == budget_mb * 2**20, (limit, workers, max_message_mb)
    assert ServeOptions(http_body_budget_mb=300).http_body_budget == 300 * 2**20  # the flag wins
