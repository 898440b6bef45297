"""``--fronts 2``: two front processes on one socket serve, survive a dead front,
reload their pools on SIGHUP and drain on SIGTERM with nothing left behind.

One server for the whole module, driven through its life in order (the steps
depend on each other, so they are one test).
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import httpx
import psutil

from .serverproc import HOST, Server, cli_command, subprocess_env, wait_gone

APP = "tests.apps.core_app:app"
DEADLINE = 60.0


def _fronts(server: Server) -> list[psutil.Process]:
    """The master's children that are fronts (not multiprocessing's resource tracker)."""
    out = []
    for p in psutil.Process(server.pid).children():
        try:
            if "a2wsgi-mp: front [" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _tree(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            out += [p, *p.children(recursive=True)]
        except psutil.Error:
            pass
    return out


def _wait(condition, what: str, timeout: float = DEADLINE):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _worker_pids_seen(url: str, want: int) -> set[int]:
    """Worker pids answering fresh connections, until ``want`` distinct ones (bounded)."""
    seen: set[int] = set()

    def one(_: int) -> int:
        with httpx.Client(timeout=10) as c:  # a fresh connection: any front may accept it
            return c.get(url + "/sleep?t=0.2").json()["pid"]

    deadline = time.monotonic() + DEADLINE
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        while len(seen) < want and time.monotonic() < deadline:
            seen.update(ex.map(one, range(4)))
    return seen


def test_two_fronts_serve_restart_reload_and_drain(tmp_path) -> None:  # type: ignore[no-untyped-def]
    argv = [*cli_command(), APP, "--host", HOST, "--port", "{port}", "--graceful-timeout", "5",
            "--fronts", "2", "--workers", "2", "--log-level", "warning"]
    server = Server("fronts", argv, log_dir=tmp_path, env=subprocess_env())
    with server:
        fronts = _wait(lambda: (f := _fronts(server)) and len(f) == 2 and f, "two fronts")
        # Each front has its own pool: one worker each, and both serve.
        assert len(_worker_pids_seen(server.url, 2)) == 2, server.log()

        # A dead front is replaced; its pool dies with it.
        victim = fronts[0]
        victim_tree = _tree([victim])
        victim.kill()
        _wait(lambda: len(f := _fronts(server)) == 2 and victim.pid not in {p.pid for p in f}, "a new front")
        assert not wait_gone(victim_tree, 15), "the dead front's workers outlived it"
        # Both serve again: the new front has started, so the SIGHUP below reloads it too (one
        # still starting is left alone, its workers with it: seen on a loaded machine).
        assert len(_worker_pids_seen(server.url, 2)) == 2, server.log()

        # SIGHUP: each front reloads its pool in place (tests/test_fronts_reload.py); the old
        # workers leave nothing behind.
        old = _fronts(server)
        old_workers = _wait(lambda: len(w := [p for p in _tree(old) if "a2wsgi-mp: worker" in " ".join(p.cmdline())])
                            == 2 and w, "a worker in each front")
        server.remember_descendants()
        os.kill(server.pid, signal.SIGHUP)
        assert not wait_gone(old_workers, DEADLINE), "the old workers outlived the reload"
        assert {p.pid for p in _fronts(server)} == {p.pid for p in old}
        assert httpx.get(server.url + "/hello", timeout=10).text == "Hello, world!"
        server.remember_descendants()

        # SIGTERM: the master drains the fronts and exits by itself; nothing outlives it.
        survivors = server.stop()
    log = server.log()
    assert not survivors, [p.pid for p in survivors]
    assert server.proc is not None and server.proc.returncode == 0, (server.proc.returncode, log)
    assert "Traceback" not in log, log


def test_fronts_drain_and_exit_when_the_master_is_killed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A SIGKILLed master leaves no orphaned front: each front sees its master's pidfd
    turn readable, drains as on SIGTERM, and its pool goes with it."""
    argv = [*cli_command(), APP, "--host", HOST, "--port", "{port}",
            "--fronts", "2", "--workers", "2", "--graceful-timeout", "3", "--log-level", "warning"]
    server = Server("fronts-orphans", argv, log_dir=tmp_path, env=subprocess_env())
    with server:
        fronts = _wait(lambda: (f := _fronts(server)) and len(f) == 2 and f, "two fronts")
        # Both fronts serve (each has its own worker): the master dies under running fronts,
        # not under one still waiting for its pool (that front would wait out its boot timeout).
        assert len(_worker_pids_seen(server.url, 2)) == 2, server.log()
        tree = _tree(fronts)
        assert len(tree) >= 6, tree  # 2 fronts, 2 zygotes, 2 workers at least
        os.kill(server.pid, signal.SIGKILL)

        def alive(p: psutil.Process) -> bool:
            try:
                return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return False

        def all_gone() -> bool:
            return not [p for p in tree if alive(p)]

        _wait(all_gone, "every front, zygote and worker to exit after the master's SIGKILL")
