"""The test harness's own promise: no server a test started outlives the test run."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from . import serverproc
from .serverproc import Server, pid_gone, wait_for


def test_a_server_its_test_never_stopped_is_stopped_at_exit() -> None:
    server = Server.cli("tests.apps.fastpath_app:app", "--workers", "1", ready_path="/hello").start()
    server.wait_ready()
    pids = [server.pid, *(p.pid for p in server.descendants())]
    assert len(pids) >= 3  # front, zygote, worker
    with pytest.raises(RuntimeError):
        with server:  # (the misuse that once left one running: its __enter__ starts it again)
            pass
    assert server in serverproc.stop_leftovers()  # what atexit runs at the end of the run
    assert wait_for(lambda: all(pid_gone(pid) for pid in pids), 20, what="the left-over server's processes")
    assert server not in serverproc.stop_leftovers()


def test_a_run_ended_by_sigterm_stops_its_servers_first() -> None:
    """A shell's ``timeout`` or CI's job limit sends SIGTERM, which skips at-exit handlers: the
    servers (each in a session of its own, so the signal never reached them) are stopped anyway,
    and the run still dies of the signal."""
    script = (
        "import sys, time\n"
        "from tests.serverproc import Server\n"
        "s = Server.cli('tests.apps.fastpath_app:app', '--workers', '1', ready_path='/hello').start().wait_ready()\n"
        "print(s.pid, *[p.pid for p in s.descendants()], flush=True)\n"
        "time.sleep(120)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", script], cwd=serverproc.REPO, env=serverproc.subprocess_env(),
                           stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None
        pids = [int(p) for p in run.stdout.readline().split()]
        assert len(pids) >= 3, pids  # front, zygote, worker
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == -signal.SIGTERM
        assert wait_for(lambda: all(pid_gone(pid) for pid in pids), 20, what="the run's server processes")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
