"""Death reports on a real server: what a worker was doing when it was killed or died, and why.

A hung request's stacks (every thread) are logged with its request line before
the kill; a crash names its signal or exit code and its request; the kernel's
OOM killer is named as such (in a memory-limited cgroup, where the machine lets
a test make one); ``--max-rss-hard`` ends a worker mid-request with its stacks.
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from .serverproc import HOST, Server, metrics, subprocess_env, wait_for

APP = "tests.apps.sup_faults:app"


@pytest.fixture
def server(start_server):
    def start(*options: str, argv_prefix: list[str] | None = None) -> Server:
        argv = [sys.executable, "-m", "a2wsgi_mp", APP, "--host", HOST, "--port", "{port}",
                "--metrics-path", "/metrics", "--no-access-log", *options]
        return start_server(Server(APP, (argv_prefix or []) + argv, env=subprocess_env(), probe="/", ok_only=False))

    return start


def deaths(url: str, reason: str) -> float:
    return metrics(url).get(f'a2wsgi_mp_worker_deaths_total{{reason="{reason}"}}', 0)


def test_timeout_logs_the_request_line_and_every_threads_stack(server):
    srv = server("--workers", "1", "--timeout", "1")
    t0 = time.monotonic()
    response = httpx.get(srv.url + "/hang-threads?x=1", timeout=10)
    elapsed = time.monotonic() - t0
    assert response.status_code == 504
    assert elapsed < 2.5, f"the 504 waited for the stack dump: {elapsed:.2f} s"
    assert wait_for(lambda: "its stacks" in srv.log(), 5), srv.log()
    log = srv.log()
    line = next(ln for ln in log.splitlines() if "killing worker" in ln)
    assert re.search(r'killing worker \d+: request exceeded the 1 s timeout; it was serving '
                     r'"GET /hang-threads\?x=1 HTTP/1.1" for 1\.\d s, RSS \d+ MiB; its stacks', line), line
    # The stuck frame of the app, and the app's other thread; not the pool's own threads.
    assert re.search(r'File ".*sup_faults\.py", line \d+ in app', log), log
    assert re.search(r'File ".*sup_faults\.py", line \d+ in _helper_sleeps', log), log
    assert "lifeline.py" not in log and log.count("Thread 0x") + log.count("Current thread 0x") == 2
    assert deaths(srv.url, "timeout") == 1
    assert httpx.get(srv.url + "/", timeout=10).status_code == 200  # the replacement serves


@pytest.mark.parametrize("fault, how", [("/segfault", "killed by SIGSEGV"), ("/exit", "exit code 7")])
def test_crash_logs_how_the_worker_died_and_its_request(server, fault, how):
    srv = server("--workers", "1")
    assert httpx.get(srv.url + "/", timeout=10).status_code == 200  # (an RSS sample with its last frame)
    assert httpx.get(srv.url + fault, timeout=10).status_code == 502
    assert wait_for(lambda: "died (" in srv.log(), 5), srv.log()
    line = next(ln for ln in srv.log().splitlines() if "died (" in ln)
    assert re.search(rf'worker \d+ died \({how}\), serving "GET {fault} HTTP/1.1" for \d+\.\d s; '
                     rf'last RSS sample \d+ MiB', line), line
    if fault == "/segfault":  # faulthandler's dump says where
        assert "Fatal Python error: Segmentation fault" in srv.log()
        assert re.search(r'File ".*sup_faults\.py", line \d+ in app', srv.log())
    assert deaths(srv.url, "crash") == 1 and deaths(srv.url, "oom") == 0


def test_max_rss_hard_ends_the_worker_mid_request(server):
    srv = server("--workers", "1", "--max-rss-hard", "150")
    response = httpx.get(srv.url + "/alloc?1000", timeout=30)
    assert response.status_code == 502
    assert wait_for(lambda: "ended itself" in srv.log(), 5), srv.log()
    line = next(ln for ln in srv.log().splitlines() if "ended itself" in ln)
    assert re.search(r'worker \d+ ended itself, serving "GET /alloc\?1000 HTTP/1.1" for \d+\.\d s: '
                     r'RSS (\d+) MiB passed max_rss_hard 150 MiB; 502 for its request', line), line
    assert int(re.search(r"RSS (\d+) MiB passed", line)[1]) < 400  # caught well before the 1000 MiB
    assert re.search(r'File ".*sup_faults\.py", line \d+ in app', srv.log())
    assert deaths(srv.url, "max_rss_hard") == 1
    assert httpx.get(srv.url + "/", timeout=10).status_code == 200


def _memory_cgroup() -> tuple[Path, str] | None:
    """A fresh child memory cgroup (v2 or v1) we may write to: (its directory, its limit file)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    name = f"a2wsgi-mp-test-{uuid.uuid4().hex[:8]}"
    for line in lines:
        hier, controllers, path = line.split(":", 2)
        if hier == "0" and controllers == "":
            base = Path("/sys/fs/cgroup" + path.rstrip("/"))
            control = base / "cgroup.subtree_control"
            if "memory" in control.read_text() if control.exists() else False:
                candidate, limit = base / name, "memory.max"
            else:
                continue
        elif "memory" in controllers.split(","):
            candidate, limit = Path("/sys/fs/cgroup/memory" + path.rstrip("/")) / name, "memory.limit_in_bytes"
        else:
            continue
        try:
            candidate.mkdir()
        except OSError:
            continue
        return candidate, limit
    return None


def test_oom_kill_is_named_as_such(server):
    found = _memory_cgroup()
    if found is None:
        pytest.skip("no writable memory cgroup here (needs cgroup v2 with the memory controller delegated, "
                    "or a writable v1 memory hierarchy): the OOM report cannot be provoked")
    cgroup, limit = found
    srv: Server | None = None
    try:
        (cgroup / limit).write_text(str(300 * 1024 * 1024))
        if (cgroup / "memory.memsw.limit_in_bytes").exists():  # v1: no escape into swap
            (cgroup / "memory.memsw.limit_in_bytes").write_text(str(300 * 1024 * 1024))
        if (cgroup / "memory.swap.max").exists():
            (cgroup / "memory.swap.max").write_text("0")
        # The server (front, zygote, workers) in the cgroup, from its first instruction.
        srv = server("--workers", "1", argv_prefix=["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"',
                                                     "sh"])
        assert httpx.get(srv.url + "/", timeout=10).status_code == 200
        assert httpx.get(srv.url + "/alloc?2000", timeout=60).status_code == 502
        assert wait_for(lambda: "OOM killer" in srv.log(), 5), srv.log()
        line = next(ln for ln in srv.log().splitlines() if "OOM killer" in ln)
        assert re.search(r"worker \d+ was killed by the kernel's OOM killer \(oom_kill \d+ -> \d+ in cgroup .*, "
                         r'limit 300 MiB\), serving "GET /alloc\?2000 HTTP/1.1" for \d+\.\d s; last RSS sample \d+ MiB',
                         line), line
        assert deaths(srv.url, "oom") == 1 and deaths(srv.url, "crash") == 0
    finally:
        if srv is not None:
            srv.stop()  # (first: a cgroup with processes in it cannot be removed)
        for _ in range(50):
            try:
                cgroup.rmdir()
                break
            except OSError:
                time.sleep(0.1)
