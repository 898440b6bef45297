"""Fault injection under concurrent load, end to end, in well under a minute.

Closed-loop clients send a mix of small requests, spooled uploads and streamed
downloads (both checked by SHA-256) while workers exit and segfault in their
requests, the zygote is SIGKILLed and workers are recycled (max-requests).
With one thread per worker, the only requests allowed to fail are the ones
that killed their own worker; afterwards nothing may be left: no process, no
temp file, no descriptor of a spooled body, no stray memfd.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import random
import signal
import time

import httpx
import psutil

from .apps.stress_app import pattern
from .serverproc import ServerProcess, metrics, wait_for, wait_gone

WORKERS = 2
DURATION = 12.0  # seconds of load
MAX_REQUESTS = 4000  # ...or this many requests, whichever comes first
CLIENTS = 6
UPLOAD = 1536 * 1024  # past the 1 MiB spool threshold: a temp file handed over by descriptor
FAULT_EVERY = 0.6  # seconds between faults


def _fds(pid: int) -> list[str]:
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return links


def _memfds(pid: int) -> int:
    return sum(1 for link in _fds(pid) if link.startswith("/memfd:a2wsgi-mp"))


def _spooled(pid: int, tmp: str) -> list[str]:
    return [link for link in _fds(pid)
            if link.startswith(tmp) or (link.endswith("(deleted)") and not link.startswith("/memfd:"))]


def _ours(pids: set[int], tmp: str) -> list[psutil.Process]:
    """The processes among ``pids`` that are this server's (a pid may have been reused since)."""
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.environ().get("TMPDIR") == tmp:
                procs.append(p)
        except psutil.Error:
            pass
    return procs


def _zygote(srv: ServerProcess) -> psutil.Process | None:
    return next((p for p in srv.descendants() if p.ppid() == srv.pid), None)


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.failures: list[str] = []  # requests that failed although their worker was not killed
        self.faults: collections.Counter[str] = collections.Counter()
        self.fault_results: list[tuple[str, int]] = []
        self.zygote_kills = 0
        self.pids: set[int] = set()
        self.count = 0


async def _client(url: str, seed: int, tally: Tally, stop: asyncio.Event) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        while not stop.is_set() and tally.count < MAX_REQUESTS:
            tally.count += 1
            kind = rng.choices(["small", "upload", "download"], [6, 1, 1])[0]
            try:
                if kind == "upload":
                    body = rng.randbytes(UPLOAD if rng.random() < 0.5 else 40_000)
                    r = await http.post("/upload", content=body)
                    length, digest, pid = r.text.split()
                    ok = r.status_code == 200 and int(length) == len(body) and \
                        digest == hashlib.sha256(body).hexdigest()
                elif kind == "download":
                    size, dseed = rng.randrange(1, 3 << 20), rng.randrange(1 << 30)
                    r = await http.get(f"/download?size={size}&seed={dseed}")
                    pid = r.headers.get("x-pid", "0")
                    ok = r.status_code == 200 and r.content == pattern(size, dseed)
                else:
                    r = await http.get("/")
                    pid = r.text
                    ok = r.status_code == 200
                tally.pids.add(int(pid))
            except (httpx.HTTPError, ValueError) as exc:
                ok, r = False, None  # type: ignore[assignment]
                kind += f" ({type(exc).__name__})"
            if ok:
                tally.ok += 1
            else:
                tally.failures.append(f"{kind}: {r.status_code if r is not None else '-'}")


async def _faults(srv: ServerProcess, tally: Tally, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=srv.url, timeout=60) as http:
        for i in range(1000):
            await asyncio.sleep(FAULT_EVERY)
            if stop.is_set():
                return
            fault = ("/exit", "zygote", "/segfault")[i % 3]
            tally.faults[fault] += 1
            if fault == "zygote":
                zygote = await asyncio.to_thread(_zygote, srv)
                if zygote is not None:
                    zygote.send_signal(signal.SIGKILL)
                    tally.zygote_kills += 1
            else:
                try:
                    status = (await http.get(fault)).status_code
                except httpx.HTTPError:
                    status = 0
                tally.fault_results.append((fault, status))


def test_faults_under_load_cost_only_their_own_requests(tmp_path):
    tmp = str(tmp_path)
    srv = ServerProcess.cli(
        "tests.apps.stress_app:app", "--workers", str(WORKERS), "--threads", "1", "--ipc", "shm",
        "--max-requests", "60", "--max-requests-jitter", "20", "--spool-dir", tmp, "--no-access-log",
        "--metrics-path", "/metrics", env={"TMPDIR": tmp}, ready_path="/",
    )
    srv.start().wait_ready()
    try:
        assert wait_for(lambda: metrics(srv.url).get('a2wsgi_mp_workers{state="ready"}') == WORKERS, 30)
        fds_before = len(_fds(srv.pid))
        tally = Tally()

        async def scenario() -> None:
            stop = asyncio.Event()
            clients = [asyncio.ensure_future(_client(srv.url, seed, tally, stop)) for seed in range(CLIENTS)]
            injector = asyncio.ensure_future(_faults(srv, tally, stop))
            t0 = time.monotonic()
            while time.monotonic() - t0 < DURATION and tally.count < MAX_REQUESTS:
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*clients, injector)

        asyncio.run(scenario())
        m = metrics(srv.url)
        summary = (f"{tally.count} requests, {tally.ok} ok, faults {dict(tally.faults)}, "
                   f"{len(tally.pids)} worker pids, recycled {m['a2wsgi_mp_recycles_total']:g}, "
                   f"respawned {m['a2wsgi_mp_respawns_total']:g}")
        print(summary)
        # Only the requests that killed their own worker failed, each with 502.
        assert tally.failures == [], (summary, tally.failures[:20])
        assert tally.fault_results and all(status == 502 for _, status in tally.fault_results), tally.fault_results
        assert m["a2wsgi_mp_worker_crashes_total"] == len(tally.fault_results)
        assert m["a2wsgi_mp_rejected_total"] == 0
        assert tally.zygote_kills >= 2 and m["a2wsgi_mp_recycles_total"] >= 2 and tally.ok > 100, summary
        # The pool is whole again and holds nothing it should not.
        assert wait_for(lambda: metrics(srv.url).get('a2wsgi_mp_workers{state="ready"}') == WORKERS, 30)
        assert wait_for(lambda: _spooled(srv.pid, tmp) == [], 10), _spooled(srv.pid, tmp)
        assert wait_for(lambda: _memfds(srv.pid) == WORKERS, 10), _memfds(srv.pid)  # one ring per live slot
        assert wait_for(lambda: len(_fds(srv.pid)) <= fds_before, 10), (fds_before, _fds(srv.pid))
        srv.remember_descendants()
        live = _ours(tally.pids, tmp)
    finally:
        leftovers = srv.stop()
    assert leftovers == []
    assert wait_gone(live, 10) == []  # orphans of killed zygotes too (they are no descendants)
    assert os.listdir(tmp) == []
