"""Following processes we did not fork (pidfds), and a worker's tie to the front."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from a2wsgi_mp.pool.processes import HAVE_PIDFD, ProcessTable
from a2wsgi_mp.workers.lifeline import watch_front

from .serverproc import until

pytestmark = pytest.mark.skipif(not HAVE_PIDFD, reason="pidfds are Linux-only")


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_an_exit_nobody_reports_is_seen_by_pidfd() -> None:
    proc = _sleeper()
    gone: list[tuple[str, int | None]] = []

    async def scenario() -> None:
        table: ProcessTable[str] = ProcessTable(lambda owner, status: gone.append((owner, status)), lambda g: False)
        table.add(proc.pid, "w", 1)
        assert proc.pid in table and table.owners() == ["w"]
        table.signal(proc.pid, "other", signal.SIGKILL)  # not its owner: nothing happens
        await asyncio.sleep(0.1)
        assert proc.poll() is None
        table.signal(proc.pid, "w", signal.SIGKILL)
        assert await until(lambda: gone, 10.0)
        assert proc.pid not in table

    try:
        asyncio.run(scenario())
    finally:
        proc.kill()
        proc.wait()
    assert gone == [("w", None)]


def test_while_its_zygote_lives_the_status_is_awaited_then_settled_if_it_dies() -> None:
    procs = [_sleeper(), _sleeper()]
    gone: list[tuple[str, int | None]] = []
    alive = {"zygote": True}

    async def scenario() -> None:
        table: ProcessTable[str] = ProcessTable(lambda owner, status: gone.append((owner, status)),
                                                lambda g: alive["zygote"])
        table.add(procs[0].pid, "reported", 1)
        table.add(procs[1].pid, "orphaned", 1)
        for p in procs:
            p.kill()
            p.wait()  # (we are the reaper here, standing in for the zygote)
        await asyncio.sleep(0.2)  # the pidfds are readable by now: marked, not settled
        assert gone == []
        table.gone(procs[0].pid, 9)  # the zygote's EXITED
        table.gone(procs[0].pid, 9)  # (once only)
        assert gone == [("reported", 9)]
        alive["zygote"] = False
        table.reporter_lost()
        assert gone == [("reported", 9), ("orphaned", None)] and len(table) == 0

    asyncio.run(scenario())


def test_a_worker_watching_the_front_dies_with_it() -> None:
    front = _sleeper()
    front_fd = os.pidfd_open(front.pid)
    watching_r, watching_w = os.pipe()
    child = os.fork()
    if child == 0:  # the "worker"
        try:
            watch_front(front_fd)
            os.write(watching_w, b"1")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(front_fd)
    os.close(watching_w)
    try:
        assert os.read(watching_r, 1) == b"1"  # it watches the front now (or read() gives b"" if it died)
        assert os.waitpid(child, os.WNOHANG) == (0, 0)  # alive while the front is
        front.kill()
        front.wait()
        deadline = time.monotonic() + 10
        while (result := os.waitpid(child, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert result[0] == child and os.WIFSIGNALED(result[1]) and os.WTERMSIG(result[1]) == signal.SIGKILL
    finally:
        os.close(watching_r)
        front.kill()
        try:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_a_worker_whose_front_hung_up_before_ready_exits_quietly() -> None:
    """A booting worker the front no longer wants (retired during a reload storm, or the front
    gone) finds its connection closed when it says READY: it leaves as on any hang-up, exit 0
    and no traceback on the shared stderr."""
    import socket

    from .serverproc import REPO, subprocess_env

    worker_end, front_end = socket.socketpair()
    front_end.close()  # the front hung up while the worker booted
    code = ("import socket, sys; from a2wsgi_mp.workers.process import run_worker; "
            "run_worker('tests.apps.core_app:app', [socket.socket(fileno=int(sys.argv[1]))], int(sys.argv[2]))")
    proc = subprocess.run([sys.executable, "-c", code, str(worker_end.fileno()), str(os.getpid())],
                          pass_fds=[worker_end.fileno()], capture_output=True, timeout=60, cwd=REPO,
                          env=subprocess_env())
    worker_end.close()
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    assert proc.returncode == 0, (proc.returncode, proc.stderr.decode())
