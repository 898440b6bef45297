"""What the container lets this process use: CPUs and memory, from the cgroup and the affinity mask.

``os.cpu_count()`` is the host's count.  In a container with a CPU limit
(Kubernetes ``resources.limits.cpu: 2`` on a 64-core node) a pool sized from it
starts 64 workers that share two CPUs' worth of time, and as many copies of
the app in a memory limit meant for two: the OOM killer's favourite setup.
The CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``),
the smallest along the path to the root, and the affinity mask
(``taskset``, cpusets) bound what this process may use.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_paths(proc_cgroup: Path) -> dict[str, str]:
    """Controller (``""`` for cgroup v2) -> this process's cgroup path, from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _up(base: Path, path: str) -> list[Path]:
    """``base/path`` and each of its parents up to ``base`` (limits along the way all apply)."""
    out = []
    here = base / path.lstrip("/")
    while True:
        out.append(here)
        if here == base or base not in here.parents:
            return out
        here = here.parent


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> tuple[float, str] | None:
    """The CPU quota in CPUs (``1.5``) and the file it came from; None if there is none."""
    own = _own_paths(proc_cgroup)
    best: tuple[float, str] | None = None
    if "" in own:  # cgroup v2: "max 100000" or "150000 100000"
        for directory in _up(root, own[""]):
            text = _read(directory / "cpu.max")
            if text and not text.startswith("max"):
                quota, _, period = text.partition(" ")
                cpus = int(quota) / int(period or 100000)
                if best is None or cpus < best[0]:
                    best = (cpus, f"{directory / 'cpu.max'} {text}")
    if "cpu" in own:  # cgroup v1
        for directory in _up(root / "cpu", own["cpu"]):
            v1_quota, v1_period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
            if v1_quota and v1_period and v1_quota.lstrip("-").isdigit() and int(v1_quota) > 0:
                cpus = int(v1_quota) / int(v1_period)
                if best is None or cpus < best[0]:
                    best = (cpus, f"{directory / 'cpu.cfs_quota_us'} {v1_quota}/{v1_period}")
    return best


def memory_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> tuple[int, str] | None:
    """The memory limit in bytes and the file it came from; None if there is none."""
    own = _own_paths(proc_cgroup)
    best: tuple[int, str] | None = None
    candidates: list[Path] = []
    if "" in own:
        candidates += [d / "memory.max" for d in _up(root, own[""])]
    if "memory" in own:
        candidates += [d / "memory.limit_in_bytes" for d in _up(root / "memory", own["memory"])]
    for path in candidates:
        text = _read(path)
        # v1's "no limit" is a huge page-rounded number (2**63 rounded down): above 2**60 means none.
        if text and text.isdigit() and int(text) < 2**60 and (best is None or int(text) < best[0]):
            best = (int(text), str(path))
    return best


def available_cpus() -> tuple[int, str]:
    """How many CPUs this process may use, and why: the affinity mask, then the cgroup's quota
    (rounded up: a quota of 1.5 CPUs keeps two workers busy part of the time)."""
    try:
        count, why = len(os.sched_getaffinity(0)), "CPU affinity"
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        count, why = os.cpu_count() or 1, "os.cpu_count()"
    if count == (os.cpu_count() or count):
        why = f"{count} CPUs"
    else:
        why = f"CPU affinity: {count} of {os.cpu_count()} CPUs"
    quota = cpu_quota()
    if quota is not None and math.ceil(quota[0]) < count:
        count, why = max(1, math.ceil(quota[0])), f"cgroup CPU quota {quota[0]:g} ({quota[1]})"
    return count, why


def memory_warning(workers: int, worker_rss: int, limit: tuple[int, str] | None) -> str | None:
    """A warning when ``workers`` x ``worker_rss`` bytes would not fit in the cgroup's limit."""
    if limit is None or worker_rss <= 0:
        return None
    need = workers * worker_rss
    if need <= limit[0]:
        return None
    mib = 1024 * 1024
    return (f"{workers} workers x {worker_rss / mib:.0f} MiB (a worker's RSS now) = {need / mib:.0f} MiB, more than "
            f"the memory limit {limit[0] / mib:.0f} MiB ({limit[1]}): fewer --workers, or a larger limit, "
            f"before the OOM killer decides")
