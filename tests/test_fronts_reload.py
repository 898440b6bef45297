"""``--fronts 2`` and SIGHUP: each front reloads its pool in place.

Keep-alive clients keep sending while the master is HUPed: the fronts (and
their connections) stay, only the workers are replaced, and no request fails.
The pool's processes hold no descriptor of the master's (the listening socket,
uvicorn's health-check pipes), only their own.
"""

from __future__ import annotations

import os
import signal
import threading

import httpx
import psutil

from .serverproc import HOST, Server, cli_command, pid_gone, subprocess_env, wait_for
from .test_lifecycle import _NotifySocket

APP = "tests.apps.core_app:app"
HUPS = 3


def _fronts(server: Server) -> set[int]:
    """The master's children that are fronts (titled, or by their spawn command line; not
    multiprocessing's resource tracker)."""
    return {p.pid for p in psutil.Process(server.pid).children()
            if "front" in " ".join(p.cmdline()) or "multiprocessing.spawn" in " ".join(p.cmdline())}


def _pool_processes(server: Server) -> list[psutil.Process]:
    """Zygotes and workers: the descendants of the fronts."""
    out = []
    for front in psutil.Process(server.pid).children():
        try:
            out += front.children(recursive=True)
        except psutil.Error:
            pass
    return out


def _workers(server: Server) -> set[int]:
    """The zygotes' children (a worker that leaves meanwhile is left out, not its whole front)."""
    out = set()
    for front in psutil.Process(server.pid).children():
        try:
            zygotes = front.children()
        except psutil.Error:
            continue
        for zygote in zygotes:
            try:
                workers = zygote.children()
            except psutil.Error:
                continue
            out |= {w.pid for w in workers if not pid_gone(w.pid)}
    return out


def _inodes(pid: int) -> set[str]:
    """What each descriptor above stdio points at (socket:[N], pipe:[N], a path...)."""
    out = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        if int(name) > 2:
            try:
                out.add(os.readlink(f"/proc/{pid}/fd/{name}"))
            except OSError:
                pass
    return out


def test_sighup_reloads_each_front_in_place_without_dropping_keep_alive_requests(tmp_path) -> None:  # type: ignore[no-untyped-def]
    argv = [*cli_command(), APP, "--host", HOST, "--port", "{port}", "--fronts", "2", "--workers", "3",
            "--log-level", "info"]
    notify = _NotifySocket(tmp_path / "notify")  # systemd hears of the fronts from the master
    with Server("fronts-hup", argv, log_dir=tmp_path, env=subprocess_env(NOTIFY_SOCKET=notify.path)) as server:
        assert wait_for(lambda: notify.saw("READY=1"), 30), notify.messages
        fronts = wait_for(lambda: len(f := _fronts(server)) == 2 and f, 30)
        assert fronts, server.log()
        # On par with one front: titles, banner, settings lines, and the uneven split said out loud.
        assert psutil.Process(server.pid).cmdline()[0] == f"a2wsgi-mp: master [{APP}]"
        assert all(psutil.Process(pid).cmdline()[0] == f"a2wsgi-mp: front [{APP}]" for pid in fronts)
        log = server.log()
        for line in (f"serving {APP}: HTTP parser", "settings from command line: ", "with 2 fronts",
                     "3 workers do not split evenly over 2 fronts: running 1 per front (2 in all)"):
            assert line in log, (line, log)
        pool = wait_for(lambda: len(p := _pool_processes(server)) >= 4 and p, 30)  # 2 zygotes + 2 workers
        assert pool, server.log()

        # Nothing of the master's (listening socket, health-check pipes) reached the pool's processes.
        master = _inodes(server.pid)
        for p in pool:
            leaked = _inodes(p.pid) & master
            assert not leaked, (p.pid, p.cmdline(), leaked)

        stop = threading.Event()
        counts = {"ok": 0}
        failures: list[str] = []

        def client() -> None:
            with httpx.Client(base_url=server.url, timeout=10) as c:  # one keep-alive connection
                while not stop.is_set():
                    try:
                        r = c.get("/pid")
                        if r.status_code == 200:
                            counts["ok"] += 1
                        else:
                            failures.append(f"{r.status_code} {r.text[:80]}")
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for _ in range(HUPS):
                before = _workers(server)
                mark = len(notify.read())
                os.kill(server.pid, signal.SIGHUP)
                assert wait_for(lambda mark=mark: notify.saw("RELOADING=1", mark), 10), notify.messages
                # Reloaded: every worker of both fronts is a new one (and the old ones are gone).
                assert wait_for(lambda before=before: (w := _workers(server)) and len(w) == 2 and not w & before, 30), \
                    server.log()
                served = counts["ok"]
                assert wait_for(lambda served=served: counts["ok"] > served + 20, 10)
        finally:
            stop.set()
            for t in threads:
                t.join(15)
        assert not failures, (failures[:5], server.log()[-3000:])
        assert counts["ok"] > 0
        assert _fronts(server) == fronts, "a SIGHUP replaced a front (and dropped its connections)"
        log = server.log()
    assert wait_for(lambda: notify.saw("STOPPING=1"), 10), notify.messages
    notify.close()
    assert log.count("reload complete") >= 2 * HUPS, log
    assert "Traceback" not in log, log
