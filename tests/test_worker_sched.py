"""``worker_sched``: the workers' CPU scheduling policy (``--worker-sched``), read back from real
worker processes with ``os.sched_getscheduler``; a refused call is logged and the worker serves."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import httpx
import pytest

from a2wsgi_mp import WSGIPool
from a2wsgi_mp.config import PoolConfig
from a2wsgi_mp.workers import process

from .serverproc import wait_for

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getscheduler") or sys.platform != "linux",
                                reason="Linux scheduling policies")


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers the policy of the thread serving the request, as the worker sees it."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.sched_getscheduler(0)).encode()]


def _serve(**options: Any) -> tuple[list[int], list[str]]:
    """Start a pool on :func:`app` (an object: the zygote is forked from this process), ask each
    slot once; the workers' pids and the answers."""

    async def main() -> tuple[list[int], list[str]]:
        pool = WSGIPool(app, workers=2, timeout=20, **options)
        await pool.startup()
        try:
            transport = httpx.ASGITransport(app=pool)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://pool") as client:
                answers = await asyncio.gather(*(client.get("/") for _ in range(4)))
            pids = [w["pid"] for w in pool.stats()["workers"]]
            return pids, [r.text for r in answers]
        finally:
            await pool.shutdown()

    return asyncio.run(main())


def _policies(pid: int) -> set[int]:
    """The policy of every thread of ``pid``."""
    return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.parametrize("name,policy", [("idle", "SCHED_IDLE"), ("batch", "SCHED_BATCH")])
def test_workers_run_under_the_policy_and_the_front_does_not(name: str, policy: str) -> None:
    expected = getattr(os, policy)
    seen: list[set[int]] = []

    async def main() -> list[str]:
        pool = WSGIPool(app, workers=2, threads=2, timeout=20, worker_sched=name)
        await pool.startup()
        try:
            transport = httpx.ASGITransport(app=pool)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://pool") as client:
                answers = await asyncio.gather(*(client.get("/") for _ in range(4)))
            seen.extend(_policies(w["pid"]) for w in pool.stats()["workers"])  # (read while they live)
            return [r.text for r in answers]
        finally:
            await pool.shutdown()

    answers = asyncio.run(main())
    assert seen and all(s == {expected} for s in seen), seen  # every thread of every worker
    assert set(answers) == {str(expected)}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the front (this process) keeps its own


def test_normal_is_the_default_and_keeps_sched_other() -> None:
    assert PoolConfig().worker_sched == "normal"
    pids, answers = _serve()
    assert set(answers) == {str(os.SCHED_OTHER)}
    assert len(pids) == 2


def test_unknown_policy_is_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match="worker_sched"):
        PoolConfig(worker_sched="fifo")


def test_a_refused_call_is_logged_and_the_worker_serves(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    def refuse(pid: int, policy: int, param: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    # The zygote is forked from this process (the app is an object): its workers inherit the patch.
    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with caplog.at_level(logging.WARNING):
        _, answers = _serve(worker_sched="idle")
    assert set(answers) == {str(os.SCHED_OTHER)}
    refused = [r.getMessage() for r in caplog.records if "worker_sched='idle' refused" in r.getMessage()]
    assert len(refused) == 2, refused  # one line per worker, not per request
    assert "Operation not permitted" in refused[0]


def test_set_worker_sched_is_a_no_op_for_normal(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any) -> None:
        raise AssertionError("not called for normal")

    monkeypatch.setattr(os, "sched_setscheduler", boom)
    assert process.set_worker_sched("normal") is None
    assert process.set_worker_sched(None) is None


def test_cli_option_reaches_the_workers(cli_server: Any) -> None:
    server = cli_server("tests.apps.core_app:app", "--workers", "2", "--no-access-log", "--worker-sched", "idle",
                        ready_path="/hello")
    # Wait (bounded) for both workers to exist and to have set their policy, first thing after the fork.
    def policies() -> dict[int, set[int]]:
        return {pid: _policies(pid) for pid in server.worker_pids()}

    def both_idle() -> bool:
        seen = policies()
        return len(seen) == 2 and all(p == {os.SCHED_IDLE} for p in seen.values())

    assert wait_for(both_idle, 10, 0.02), policies()
    assert os.sched_getscheduler(server.pid) == os.SCHED_OTHER  # the front
