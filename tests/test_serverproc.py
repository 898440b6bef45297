"""The test harness's own promise: no server a test started outlives the test run."""

from __future__ import annotations

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
