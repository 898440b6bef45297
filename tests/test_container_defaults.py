"""The default worker count follows the CPUs this process may use (affinity, cgroup quota), and
a pool too large for the cgroup's memory limit is warned about.

The parsing of cgroup v1 and v2 files is tested on fake trees; the end-to-end tests run real
servers under ``taskset`` and, where this machine lets a test make a cgroup, under a CPU quota.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from a2wsgi_mp import cgroup

from .serverproc import HOST, Server, cli_command, subprocess_env, wait_for

APP = "tests.apps.core_app:app"


def _tree(tmp_path: Path, files: dict[str, str], own: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(own)
    return root, proc


def test_cgroup_v2_cpu_max_and_memory_max_the_smallest_on_the_path(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, {
        "cpu.max": "max 100000\n", "memory.max": "max\n",
        "kubepods/cpu.max": "400000 100000\n", "kubepods/memory.max": "4294967296\n",
        "kubepods/pod1/cpu.max": "150000 100000\n", "kubepods/pod1/memory.max": "max\n",
    }, "0::/kubepods/pod1\n")
    cpus, where = cgroup.cpu_quota(root, proc)  # type: ignore[misc]
    assert cpus == 1.5 and where.endswith("kubepods/pod1/cpu.max 150000 100000")
    assert cgroup.memory_limit(root, proc) == (4294967296, str(root / "kubepods/memory.max"))


def test_cgroup_v1_quota_and_limit_and_no_limit(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, {
        "cpu/docker/abc/cpu.cfs_quota_us": "200000\n", "cpu/docker/abc/cpu.cfs_period_us": "100000\n",
        "cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n",
        "memory/docker/abc/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
    }, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    assert cgroup.cpu_quota(root, proc) == (2.0, f"{root / 'cpu/docker/abc/cpu.cfs_quota_us'} 200000/100000")
    assert cgroup.memory_limit(root, proc) is None
    assert cgroup.cpu_quota(root, tmp_path / "missing") is None


def test_memory_warning_only_when_the_workers_do_not_fit() -> None:
    mib = 1024 * 1024
    limit = (512 * mib, "/sys/fs/cgroup/memory.max")
    assert cgroup.memory_warning(4, 100 * mib, limit) is None
    text = cgroup.memory_warning(8, 100 * mib, limit)
    assert text is not None and "8 workers x 100 MiB" in text and "512 MiB" in text and "memory.max" in text
    assert cgroup.memory_warning(8, 100 * mib, None) is None


def _serve(tmp_path: Path, prefix: list[str], name: str) -> Server:
    argv = [*prefix, *cli_command(), APP, "--host", HOST, "--port", "{port}", "--log-level", "info"]
    return Server(name, argv, log_dir=tmp_path, env=subprocess_env())


@pytest.mark.skipif(shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2,
                    reason="needs taskset and at least two CPUs")
def test_default_workers_follow_the_cpu_affinity(tmp_path: Path) -> None:
    with _serve(tmp_path, ["taskset", "-c", "0"], "affinity") as server:
        assert httpx.get(server.url + "/hello", timeout=10).status_code == 200
        assert len(server.worker_pids()) == 1
        log = server.log()
    assert f"1 workers: one per CPU this process may use: CPU affinity: 1 of {os.cpu_count()} CPUs" in log, log


def _make_cpu_cgroup(quota: int, period: int) -> Path | None:
    """A cgroup (v2 or v1) with a CPU quota this test may use, or None."""
    name = f"a2wsgi-test-{uuid.uuid4().hex[:8]}"
    for base, files in ((Path("/sys/fs/cgroup"), {"cpu.max": f"{quota} {period}"}),
                        (Path("/sys/fs/cgroup/cpu"), {"cpu.cfs_period_us": str(period),
                                                      "cpu.cfs_quota_us": str(quota)})):
        if not (base / "cgroup.procs").exists():
            continue
        try:
            (base / name).mkdir()
        except OSError:
            continue
        try:
            for file, text in files.items():
                (base / name / file).write_text(text)
            return base / name
        except OSError:
            (base / name).rmdir()
    return None


def test_default_workers_follow_the_cgroup_cpu_quota(tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs at least two CPUs to show a quota of one")
    group = _make_cpu_cgroup(100000, 100000)  # one CPU's worth
    if group is None:
        pytest.skip("this machine does not let a test create a cgroup with a CPU quota")
    try:
        enter = ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh"]
        with _serve(tmp_path, enter, "quota") as server:
            assert len(server.worker_pids()) == 1
            log = server.log()
        assert "1 workers: one per CPU this process may use: cgroup CPU quota 1 (" in log, log
    finally:
        assert wait_for(lambda: not (group / "cgroup.procs").read_text().strip(), 10)
        group.rmdir()
