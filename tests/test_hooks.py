"""Server hooks in the pool's processes (``--hooks``), with the real libraries that need them.

* every hook runs where and when gunicorn's does (recorded with the process it ran in);
* OpenTelemetry's SDK with a ``BatchSpanProcessor`` started in ``post_fork``, under ``--preload``,
  exports the spans of every worker;
* prometheus_client's multiprocess mode, ``mark_process_dead`` in ``child_exit``: the totals and
  the live-worker gauge stay right while workers are recycled.
"""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import httpx
import pytest

from .serverproc import Server, wait_for

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("prometheus_client")


def _records(path: Path) -> list[tuple[str, int, str]]:
    if not path.exists():
        return []
    return [(name, int(pid), wpid) for name, pid, wpid, _ in (ln.split() for ln in path.read_text().splitlines())]


def test_hooks_run_in_the_right_process_at_the_right_time(tmp_path):
    log = tmp_path / "hooks.log"
    srv = Server.cli("tests.apps.core_app:app", "--workers", "2", "--max-requests", "3", "--no-access-log",
                     "--hooks", "tests/apps/hooks_record.py", env={"HOOKS_LOG": str(log)}, ready_path="/hello")
    with srv:
        first = srv.worker_pids()
        assert len(first) == 2
        for _ in range(6):  # both workers retire after 3 requests each
            assert httpx.get(srv.url + "/hello", timeout=10).status_code == 200
        assert wait_for(lambda: {pid for name, pid, _ in _records(log) if name == "worker_exit"} >= first, 10), \
            log.read_text()
        srv.signal(signal.SIGHUP)
        assert wait_for(lambda: any(name == "on_reload" for name, _, _ in _records(log)), 10)
    records = _records(log)
    by_hook = collections.defaultdict(list)
    for name, pid, wpid in records:
        by_hook[name].append((pid, wpid))
    front = srv.pid
    assert by_hook["when_ready"] == [(front, "-")]
    assert by_hook["on_reload"] == [(front, "-")]
    # post_fork / post_worker_init: in the worker itself, which they describe, once each
    for hook in ("post_fork", "post_worker_init"):
        pids = [pid for pid, _ in by_hook[hook]]
        assert all(pid != front and str(pid) == wpid for pid, wpid in by_hook[hook]), by_hook[hook]
        assert first <= set(pids) and len(pids) == len(set(pids))
    for worker in first:  # in its own process, in order: fork, init, exit (retired after 3 requests)
        assert [n for n, pid, _ in records if pid == worker] == ["post_fork", "post_worker_init", "worker_exit"]
    # child_exit in the front, naming each worker that left
    assert first <= {int(w) for pid, w in by_hook["child_exit"] if pid == front}


def test_opentelemetry_batch_processor_started_in_post_fork_exports_from_every_worker(tmp_path):
    srv = Server.cli("tests.apps.otel_app:app", "--workers", "2", "--preload", "--no-access-log",
                     "--hooks", "tests/apps/otel_hooks.py", env={"SPANS_DIR": str(tmp_path)}, ready_path="/")

    async def hit() -> collections.Counter[int]:
        served: collections.Counter[int] = collections.Counter()
        async with httpx.AsyncClient(timeout=10) as client:
            while len(served) < 2 or sum(served.values()) < 20:
                for r in await asyncio.gather(*(client.get(srv.url + "/") for _ in range(4))):
                    served[int(r.text)] += 1
                assert sum(served.values()) < 400, served
        return served

    with srv:
        served = asyncio.run(hit())
        probe = set(served)

        def exported() -> dict[int, int]:
            counts = {}
            for pid in probe:
                f = tmp_path / f"spans-{pid}.txt"
                counts[pid] = f.read_text().count(f"request {pid}\n") if f.exists() else 0
            return counts

        # The ready probe was served too: at least what we counted, from both workers.
        assert wait_for(lambda: all(exported()[pid] >= served[pid] for pid in probe), 10), (exported(), served)
    assert len(probe) == 2 and all(pid != srv.pid for pid in probe)


def test_prometheus_multiprocess_totals_stay_right_while_workers_recycle(tmp_path):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    srv = Server.cli("tests.apps.prom_app:app", "--workers", "2", "--max-requests", "4", "--no-access-log",
                     "--hooks", "tests.apps.prom_hooks", env=env, ready_path="/metrics")

    def sample(text: str, name: str) -> float:
        return next(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name + " "))

    with srv:
        for _ in range(30):
            assert httpx.get(srv.url + "/", timeout=10).status_code == 200
        recycled = len({p.name for p in tmp_path.glob("counter_*.db")})
        assert recycled > 2  # workers came and went, each leaving its counter file

        def right() -> bool:
            text = httpx.get(srv.url + "/metrics", timeout=10).text
            return sample(text, "app_requests_total") == 30 and sample(text, "app_workers_alive") == 2

        assert wait_for(right, 10, 0.2), httpx.get(srv.url + "/metrics", timeout=10).text
