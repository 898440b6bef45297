"""``worker_sched="autogroup"`` (``--worker-sched autogroup``): the zygote starts a session of its
own, so it and every worker share a Linux autogroup apart from the front's, and the workers set
that group's nice to 19.  Read back from real processes (``os.getsid``, ``/proc/PID/autogroup``);
the process tree still dies with a SIGKILLed front, and the signals reach whom they did."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from a2wsgi_mp import WSGIPool
from a2wsgi_mp.config import PoolConfig
from a2wsgi_mp.workers import process

from .serverproc import wait_for, wait_gone
from .test_supervision import wait_busy

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux sessions and autogroups")

APP = "tests.apps.sup_faults:app"


def autogroup(pid: int) -> tuple[str, int]:
    """``/proc/PID/autogroup``: the group's name and its nice (``/autogroup-12 nice 19``)."""
    name, _, nice = Path(f"/proc/{pid}/autogroup").read_text().split()
    return name, int(nice)


def _reports_autogroups() -> bool:
    """Whether this kernel reports autogroups (CONFIG_SCHED_AUTOGROUP).  Some sandboxed kernels
    (CI's among them) have the file but leave it empty: nothing to read back there."""
    try:
        autogroup(os.getpid())
    except (OSError, ValueError):
        return False
    return True


HAS_AUTOGROUP = _reports_autogroups()


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{os.getpid()} {os.getsid(0)}".encode()]


def _in_process(**options: Any) -> dict[str, Any]:
    """A pool on :func:`app` in this process: the zygote's pid and process group, the workers'
    answers (pid, session), and each one's autogroup, read while they live."""

    async def main() -> dict[str, Any]:
        pool = WSGIPool(app, workers=2, timeout=20, **options)
        await pool.startup()
        try:
            transport = httpx.ASGITransport(app=pool)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://pool") as client:
                answers = [r.text for r in await asyncio.gather(*(client.get("/") for _ in range(4)))]
            pids = [w["pid"] for w in pool.stats()["workers"]]
            (zygote,) = [p for p in psutil.Process().children() if p.pid in {psutil.Process(w).ppid() for w in pids}]
            groups = {pid: autogroup(pid) for pid in [zygote.pid, *pids]} if HAS_AUTOGROUP else {}
            return {"zygote": zygote.pid, "workers": pids, "answers": answers, "groups": groups,
                    "zygote_pgid": os.getpgid(zygote.pid)}
        finally:
            await pool.shutdown()

    return asyncio.run(main())


def test_autogroup_gives_the_zygote_and_workers_a_session_and_group_of_their_own() -> None:
    seen = _in_process(worker_sched="autogroup")
    zygote, workers = seen["zygote"], seen["workers"]
    answers = {tuple(map(int, a.split())) for a in seen["answers"]}
    assert {pid for pid, _ in answers} <= set(workers) and {sid for _, sid in answers} == {zygote}
    assert os.getsid(0) != zygote  # (this process, the front, is in a session of its own)
    assert seen["zygote_pgid"] == zygote  # a process group of its own, as before
    if HAS_AUTOGROUP:
        groups = seen["groups"]
        assert {groups[pid] for pid in workers} == {groups[zygote]}  # one group for all of them
        assert groups[zygote][1] == process.AUTOGROUP_NICE
        assert groups[zygote][0] != autogroup(os.getpid())[0]  # ...not the front's
        assert autogroup(os.getpid())[1] == 0  # and the front's nice is untouched


def test_by_default_the_zygote_only_has_a_process_group_of_its_own() -> None:
    assert PoolConfig().worker_sched == "normal"
    seen = _in_process()
    zygote = seen["zygote"]
    assert seen["zygote_pgid"] == zygote
    assert {int(a.split()[1]) for a in seen["answers"]} == {os.getsid(0)}  # the front's session
    if HAS_AUTOGROUP:
        assert {g for g in seen["groups"].values()} == {autogroup(os.getpid())}


def test_the_nice_is_never_written_outside_the_zygotes_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """A zygote that could not start a session (already a group leader) leaves the workers in
    the front's session: writing the nice there would lower the front's (or a shell's) group."""
    opened: list[str] = []
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: opened.append(path))  # (fails if called)
    message = process.set_worker_sched("autogroup", os.getsid(0) + 1)  # not our session's leader
    assert opened == []
    assert message is not None and "refused (the zygote has no session of its own)" in message


def test_a_kernel_without_autogroup_is_logged_and_the_worker_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "_AUTOGROUP", "/nonexistent/autogroup")
    message = process.set_worker_sched("autogroup", os.getsid(0))
    assert message is not None and message.startswith("worker_sched='autogroup' refused (")


def test_a_kernel_that_reports_no_group_after_the_write_is_logged(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """A sandboxed kernel takes the write and then reads back nothing (CI's did): say so."""
    fake = tmp_path / "autogroup"
    monkeypatch.setattr(process, "_AUTOGROUP", str(fake))
    message = process.set_worker_sched("autogroup", os.getsid(0))
    assert fake.read_text() == str(process.AUTOGROUP_NICE)
    assert message is not None and "refused (" in message and "reads '19' after the write" in message


def test_a_refusal_reaches_the_fronts_log(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(process, "_AUTOGROUP", "/nonexistent/autogroup")  # (inherited by the forked workers)
    with caplog.at_level(logging.WARNING, logger="a2wsgi_mp"):
        seen = _in_process(worker_sched="autogroup")
    assert len(seen["answers"]) == 4  # served
    refused = [r.getMessage() for r in caplog.records if "worker_sched='autogroup' refused" in r.getMessage()]
    assert len(refused) == 2, refused  # once per worker


@pytest.mark.skipif(not HAS_AUTOGROUP, reason="no CONFIG_SCHED_AUTOGROUP")
def test_cli_option_reaches_the_workers(cli_server: Any) -> None:
    srv = cli_server(APP, "--workers", "2", "--no-access-log", "--worker-sched", "autogroup")
    front = srv.pid

    def groups() -> dict[int, tuple[str, int]]:
        return {pid: autogroup(pid) for pid in srv.worker_pids()}

    def both_at_19() -> bool:
        seen = groups()
        return len(seen) == 2 and {nice for _, nice in seen.values()} == {process.AUTOGROUP_NICE}

    assert wait_for(both_at_19, 10, 0.02), groups()
    zygotes = {psutil.Process(pid).ppid() for pid in srv.worker_pids()}
    assert len(zygotes) == 1 and {os.getsid(pid) for pid in srv.worker_pids()} == zygotes
    assert autogroup(front)[1] == 0 and autogroup(front)[0] not in {g for g, _ in groups().values()}


def test_workers_in_their_own_session_die_with_a_sigkilled_front(cli_server: Any) -> None:
    srv = cli_server(APP, "--workers", "2", "--no-access-log", "--worker-sched", "autogroup")
    assert wait_for(lambda: len(srv.worker_pids()) == 2, 15)
    children = srv.descendants()
    assert len(children) == 3  # the zygote and two workers
    assert {os.getsid(p.pid) for p in children} != {os.getsid(srv.pid)}
    os.kill(srv.pid, signal.SIGKILL)
    assert wait_gone(children, 5) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_fronts_group_stops_the_server_in_order(cli_server: Any, sig: int) -> None:
    """Ctrl-C (SIGINT to the terminal's foreground group) or a group SIGTERM reaches the front
    only, which drains the pool and exits; the request in flight is answered."""
    srv = cli_server(APP, "--workers", "2", "--no-access-log", "--metrics-path", "/metrics", "--graceful-timeout", "10",
                     "--worker-sched", "autogroup")
    assert wait_for(lambda: len(srv.worker_pids()) == 2, 15)
    everyone = [psutil.Process(srv.pid), *srv.descendants()]

    async def scenario() -> int:
        async with httpx.AsyncClient() as client:
            slow = asyncio.ensure_future(client.get(srv.url + "/sleep?1", timeout=10))
            await asyncio.to_thread(wait_busy, srv.url, 1)
            os.killpg(os.getpgid(srv.pid), sig)
            return (await slow).status_code

    assert asyncio.run(scenario()) == 200
    assert srv.wait(15) == 0
    assert wait_gone(everyone, 5) == []


def test_sigterm_to_every_process_still_drains(cli_server: Any) -> None:
    """systemd stops a whole cgroup at once, sessions or not: workers finish their request first."""
    srv = cli_server(APP, "--workers", "2", "--no-access-log", "--metrics-path", "/metrics", "--graceful-timeout", "10",
                     "--worker-sched", "autogroup")
    assert wait_for(lambda: len(srv.worker_pids()) == 2, 15)
    everyone = [psutil.Process(srv.pid), *srv.descendants()]

    async def scenario() -> int:
        async with httpx.AsyncClient() as client:
            slow = asyncio.ensure_future(client.get(srv.url + "/sleep?1", timeout=10))
            await asyncio.to_thread(wait_busy, srv.url, 1)
            for p in everyone:
                p.send_signal(signal.SIGTERM)
            return (await slow).status_code

    assert asyncio.run(scenario()) == 200
    srv.wait(15)
    assert wait_gone(everyone, 5) == []


def test_gunicorn_worker_subclass(tmp_path: Path) -> None:
    """The gunicorn worker class path: ``POOL_OPTIONS = {"worker_sched": "autogroup"}``; the pool
    still dies with a SIGKILLed gunicorn worker."""
    pytest.importorskip("gunicorn")
    from .test_gunicorn_worker import Gunicorn

    g = Gunicorn(tmp_path, "--threads", "2", "-w", "1", worker="tests.apps.autogroup_worker.AutogroupWorker")
    try:
        worker = g.one_worker()
        wait_for(lambda: len(g.pool_pids(worker)) == 2, 20, what="the pool processes")
        (zygote,) = worker.children()
        assert {os.getsid(pid) for pid in g.pool_pids(worker)} == {os.getsid(zygote.pid)} == {zygote.pid}
        assert os.getsid(worker.pid) != zygote.pid
        if HAS_AUTOGROUP:
            assert wait_for(lambda: {autogroup(pid)[1] for pid in g.pool_pids(worker)} == {process.AUTOGROUP_NICE}, 10)
        doomed = worker.children(recursive=True)
        worker.kill()
        _, alive = psutil.wait_procs(doomed, timeout=15)
        assert not alive, f"orphaned pool processes: {alive}"
    finally:
        g.close()
