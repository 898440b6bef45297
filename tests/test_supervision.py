"""Fault injection against a real server under concurrent load.

Each case asserts exactly which requests fail (and with what status) and that
the pool is whole again afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import psutil
import pytest

from .serverproc import ServerProcess, metrics, pid_gone, until, wait_for, wait_gone

APP = "tests.apps.sup_faults:app"


async def _load(url: str, paths: list[str], concurrency: int = 8, timeout: float = 30) -> list[tuple[str, int]]:
    """GET every path, ``concurrency`` at a time; (path, status) in order, 0 for a transport error."""
    results: list[tuple[str, int]] = [("", 0)] * len(paths)
    queue = list(enumerate(paths))

    async def runner(client: httpx.AsyncClient) -> None:
        while queue:
            i, path = queue.pop(0)
            try:
                response = await client.get(url + path, timeout=timeout)
                results[i] = (path, response.status_code)
            except httpx.TransportError:
                results[i] = (path, 0)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:
        await asyncio.gather(*(runner(client) for _ in range(concurrency)))
    return results


def load(url: str, paths: list[str], concurrency: int = 8) -> list[tuple[str, int]]:
    return asyncio.run(_load(url, paths, concurrency))


def ready_workers(url: str) -> int:
    return int(metrics(url).get('a2wsgi_mp_workers{state="ready"}', 0))


def wait_busy(url: str, n: int = 1, timeout: float = 15) -> None:
    """Until ``n`` requests are on workers: a condition, not a sleep that hopes they are."""
    assert wait_for(lambda: metrics(url).get("a2wsgi_mp_busy_slots", 0) >= n, timeout), f"{n} busy slots"


async def busy(url: str, n: int = 1) -> None:
    await asyncio.to_thread(wait_busy, url, n)


@pytest.fixture
def server(cli_server):
    def start(*options: str, app: str = APP, env: dict[str, str] | None = None) -> ServerProcess:
        return cli_server(app, "--metrics-path", "/metrics", "--no-access-log", *options, env=env)

    return start


@pytest.mark.parametrize("fault", ["/exit", "/segfault", "/sigkill-self", "/raise-loop"])
def test_crash_costs_exactly_one_request(server, fault):
    srv = server("--workers", "2")
    before = srv.worker_pids()
    paths = ["/sleep?0.02"] * 40
    paths[10] = fault
    results = load(srv.url, paths, concurrency=4)
    failed = [(p, s) for p, s in results if s != 200]
    assert failed == [(fault, 502)]
    t0 = time.monotonic()
    assert wait_for(lambda: ready_workers(srv.url) == 2, 10)
    respawn = time.monotonic() - t0
    m = metrics(srv.url)
    assert m["a2wsgi_mp_worker_crashes_total"] == 1
    assert m["a2wsgi_mp_respawns_total"] == 1
    after = srv.worker_pids()
    assert len(after) == 2 and len(before - after) == 1, (before, after)
    print(f"{fault}: 1 of {len(paths)} failed as expected; pool whole again {respawn * 1000:.0f} ms after the load")


def test_sigkill_from_outside_fails_only_its_request(server):
    srv = server("--workers", "2")

    async def scenario() -> tuple[int, list[tuple[str, int]]]:
        async with httpx.AsyncClient() as client:
            victim_req = asyncio.ensure_future(client.get(srv.url + "/sleep?2", timeout=10))
            await busy(srv.url)
            # The busy worker is the one whose CPU time is not growing... simpler:
            # find it by asking the other one.
            other = int((await client.get(srv.url + "/")).text)
            victim = next(pid for pid in srv.worker_pids() if pid != other)
            os.kill(victim, signal.SIGKILL)
            others = await _load(srv.url, ["/sleep?0.01"] * 20, concurrency=2)
            return (await victim_req).status_code, others

    status, others = asyncio.run(scenario())
    assert status == 502
    assert all(s == 200 for _, s in others), others
    assert wait_for(lambda: ready_workers(srv.url) == 2, 10)


def test_hung_request_gets_504_and_worker_is_replaced(server):
    srv = server("--workers", "2", "--timeout", "1")
    paths = ["/sleep?0.05"] * 30
    paths[3] = "/hang"
    t0 = time.monotonic()
    results = load(srv.url, paths, concurrency=3)
    assert [(p, s) for p, s in results if s != 200] == [("/hang", 504)]
    assert time.monotonic() - t0 < 10
    assert wait_for(lambda: ready_workers(srv.url) == 2, 10)
    m = metrics(srv.url)
    assert m["a2wsgi_mp_timeouts_total"] == 1 and m["a2wsgi_mp_kills_total"] == 1
    assert "request exceeded the 1 s timeout" in srv.log()


def test_max_requests_recycles_without_failing_a_request(server):
    srv = server("--workers", "2", "--max-requests", "5", "--max-requests-jitter", "2")
    results = load(srv.url, ["/"] * 60, concurrency=4)
    assert all(s == 200 for _, s in results), [r for r in results if r[1] != 200]
    m = metrics(srv.url)
    # 60 requests, at most 7 per worker: at least 8 retirements.
    assert m["a2wsgi_mp_recycles_total"] >= 8
    assert m["a2wsgi_mp_worker_crashes_total"] == 0
    assert "served 5 requests" in srv.log() or "served 6 requests" in srv.log() or "served 7 requests" in srv.log()


def test_max_rss_recycles_between_requests(server):
    srv = server("--workers", "1", "--max-rss", "120")
    pid = int(httpx.get(srv.url + "/").text)
    assert httpx.get(srv.url + "/grow?200", timeout=10).status_code == 200
    # The worker reports its RSS with the response: the next request meets a new worker.
    assert int(httpx.get(srv.url + "/", timeout=10).text) != pid
    assert wait_for(lambda: pid_gone(pid), 10)
    assert "RSS" in srv.log()


def test_max_rss_overshoot_stays_within_one_request(server):
    """A worker leaking 16 MiB a request never holds more than max_rss + 16 MiB."""
    limit, leak = 200, 16
    srv = server("--workers", "1", "--max-rss", str(limit))
    seen: list[tuple[int, int]] = []
    for _ in range(30):
        response = httpx.get(srv.url + f"/leak?{leak}", timeout=30)
        assert response.status_code == 200
        pid, rss = map(int, response.text.split())
        seen.append((pid, rss))
    overshoot = max(rss for _, rss in seen) - limit * 2**20
    print(f"max RSS {max(rss for _, rss in seen) / 2**20:.0f} MiB: {overshoot / 2**20:+.1f} MiB over --max-rss {limit}")
    assert overshoot <= (leak + 2) * 2**20, seen
    assert len({pid for pid, _ in seen}) >= 2  # recycled at least once (30 x 16 MiB = 480 MiB)
    assert metrics(srv.url)["a2wsgi_mp_worker_crashes_total"] == 0


def test_backlog_full_answers_503_with_retry_after(server):
    srv = server("--workers", "1", "--backlog", "2")

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=10)) as client:
            first = asyncio.ensure_future(client.get(srv.url + "/sleep?2", timeout=10))
            await busy(srv.url)
            rest = [asyncio.ensure_future(client.get(srv.url + "/sleep?0.1", timeout=10)) for _ in range(5)]
            return [await first] + [await r for r in rest]

    responses = asyncio.run(scenario())
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 200, 503, 503, 503]
    assert all(r.headers.get("retry-after") for r in responses if r.status_code == 503)


def test_queue_timeout_answers_503(server):
    srv = server("--workers", "1", "--queue-timeout", "0.3")

    async def scenario() -> list[int]:
        async with httpx.AsyncClient() as client:
            # Busy for 2 s: the second request's 0.3 s in the queue end well before the worker is
            # free, however late a busy machine gets it sent.
            first = asyncio.ensure_future(client.get(srv.url + "/sleep?2", timeout=10))
            await busy(srv.url)
            second = await client.get(srv.url + "/", timeout=10)
            return [(await first).status_code, second.status_code]

    assert asyncio.run(scenario()) == [200, 503]
    assert httpx.get(srv.url + "/").status_code == 200


def test_sigterm_lets_in_flight_requests_finish(server):
    srv = server("--workers", "2", "--graceful-timeout", "10")
    srv.remember_descendants()
    children = srv.descendants()

    async def scenario() -> int:
        async with httpx.AsyncClient() as client:
            slow = asyncio.ensure_future(client.get(srv.url + "/sleep?1.5", timeout=10))
            await busy(srv.url)
            srv.signal(signal.SIGTERM)
            return (await slow).status_code

    assert asyncio.run(scenario()) == 200
    srv.wait(15)
    assert wait_gone(children, 5) == []


def test_sighup_replaces_workers_without_dropping_requests(server):
    srv = server("--workers", "2")
    before = srv.worker_pids()
    served = metrics(srv.url)["a2wsgi_mp_requests_total"]

    async def scenario() -> list[tuple[str, int]]:
        task = asyncio.ensure_future(_load(srv.url, ["/sleep?0.01"] * 150, concurrency=6))
        await asyncio.to_thread(  # the load is under way (and far from done) when HUP comes
            wait_for, lambda: metrics(srv.url)["a2wsgi_mp_requests_total"] >= served + 10, 15)
        srv.signal(signal.SIGHUP)
        return await task

    results = asyncio.run(scenario())
    assert all(s == 200 for _, s in results), [r for r in results if r[1] != 200]
    assert wait_for(lambda: len(srv.worker_pids()) == 2 and not (srv.worker_pids() & before), 10)
    assert ready_workers(srv.url) == 2


def test_workers_die_with_a_sigkilled_front(server, tmp_path):
    srv = server("--workers", "2", env={"TMPDIR": str(tmp_path)})
    children = srv.descendants()
    assert len(children) == 3  # the zygote and two workers

    async def upload_then_kill() -> None:
        sent = 0

        async def body():
            nonlocal sent
            for _ in range(40):
                yield b"x" * (256 * 1024)  # 10 MiB: past the spool threshold
                sent += 1
                await asyncio.sleep(0.01)

        async with httpx.AsyncClient() as client:
            request = asyncio.ensure_future(client.post(srv.url + "/", content=body(), timeout=10))
            assert await until(lambda: sent >= 20, 15)  # 5 MiB sent: the front is spooling it
            os.kill(srv.pid, signal.SIGKILL)
            with pytest.raises(httpx.TransportError):
                await request

    asyncio.run(upload_then_kill())
    assert wait_gone(children, 5) == []
    assert list(Path(tmp_path).iterdir()) == []


def test_boot_failure_backs_off_answers_503_then_recovers(server, tmp_path):
    flag = tmp_path / "ok"
    flag.write_text("1")
    srv = server("--workers", "2", app="tests.apps.sup_flaky:app", env={"SUP_FLAG": str(flag)})
    flag.unlink()
    for _ in range(2):
        assert httpx.get(srv.url + "/exit", timeout=10).status_code == 502
    # Replacements cannot load the app now: 503 with Retry-After, no hot loop.
    t0 = time.monotonic()
    response = wait_for(lambda: (r := httpx.get(srv.url + "/", timeout=10)).status_code == 503 and r, 10)
    assert response and response.headers["retry-after"]
    time.sleep(2.0)
    attempts = srv.log().count("could not load")
    elapsed = time.monotonic() - t0
    assert 2 <= attempts <= 2 * (3 + elapsed), srv.log()  # back-off, not hundreds of attempts
    flag.write_text("1")
    assert wait_for(lambda: httpx.get(srv.url + "/", timeout=10).status_code == 200, 20, 0.2)
    assert wait_for(lambda: ready_workers(srv.url) == 2, 20, 0.2)


def pool_pids(url: str) -> set[int]:
    """The worker pids the pool reports (orphaned workers are no descendants of the front)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    return {int(line.split('"')[1]) for line in text.splitlines() if line.startswith("a2wsgi_mp_worker_requests{pid=")}


def zygote_of(srv: ServerProcess) -> psutil.Process | None:
    def is_child(p: psutil.Process) -> bool:
        try:
            return p.ppid() == srv.pid
        except psutil.Error:  # gone since descendants() listed it (a worker or a killed zygote)
            return False

    return next((p for p in srv.descendants() if is_child(p)), None)


def kill_zygote(srv: ServerProcess) -> psutil.Process:
    """SIGKILL the zygote; return once a new one runs."""
    victim = zygote_of(srv)
    assert victim is not None
    victim.kill()
    assert wait_for(lambda: (z := zygote_of(srv)) is not None and z.pid != victim.pid, 15)
    return victim


async def _closed_loop(url: str, path: str, clients: int, stop: asyncio.Event) -> list[int]:
    """``clients`` clients, each sending its next request when the last is answered, until ``stop``."""
    statuses: list[int] = []

    async def client() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while not stop.is_set():
                try:
                    statuses.append((await http.get(url + path)).status_code)
                except httpx.TransportError:
                    statuses.append(0)

    await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


def test_zygote_kills_cost_no_request(server):
    """The workers watch the front, not the zygote: they serve on while a new zygote starts."""
    srv = server("--workers", "2")
    workers = pool_pids(srv.url)
    assert workers == srv.worker_pids() and len(workers) == 2

    async def scenario() -> list[int]:
        stop = asyncio.Event()
        load = asyncio.ensure_future(_closed_loop(srv.url, "/sleep?0.005", 4, stop))
        for _ in range(3):
            await asyncio.sleep(0.3)
            await asyncio.to_thread(kill_zygote, srv)
        await asyncio.sleep(0.3)
        stop.set()
        return await load

    statuses = asyncio.run(scenario())
    assert len(statuses) > 20 and set(statuses) == {200}, collections.Counter(statuses)
    assert pool_pids(srv.url) == workers  # the same workers, orphaned but alive and serving
    assert all(psutil.Process(pid).ppid() != srv.pid for pid in workers)
    m = metrics(srv.url)
    assert m["a2wsgi_mp_respawns_total"] == 0 and m["a2wsgi_mp_rejected_total"] == 0
    # An orphan that crashes is seen (by pidfd) and replaced through the new zygote.
    assert httpx.get(srv.url + "/exit", timeout=10).status_code == 502
    assert wait_for(lambda: ready_workers(srv.url) == 2 and len(pool_pids(srv.url) - workers) == 1, 15)
    assert len(pool_pids(srv.url) & srv.worker_pids()) == 1  # the newcomer is the new zygote's child
    assert "status unknown" in srv.log() or "its connection closed" in srv.log()
    assert "could not load" not in srv.log() and "while loading" not in srv.log()


def test_a_spawn_lost_with_the_zygote_is_no_boot_failure(server):
    """A replacement asked of a zygote that dies is asked again of the next one; requests wait."""
    srv = server("--workers", "1")
    zygote = zygote_of(srv)
    assert zygote is not None
    zygote.suspend()  # it will not act on the SPAWN for the replacement...
    assert httpx.get(srv.url + "/exit", timeout=10).status_code == 502

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as http:
            waiting = [asyncio.ensure_future(http.get(srv.url + "/")) for _ in range(3)]
            assert await asyncio.to_thread(wait_for, lambda: metrics(srv.url)["a2wsgi_mp_queue_depth"] == 3, 15)
            assert not any(w.done() for w in waiting)  # queued, not refused
            zygote.kill()  # ...and dies with it
            return [(await w).status_code for w in waiting]

    assert asyncio.run(scenario()) == [200, 200, 200]
    assert wait_for(lambda: ready_workers(srv.url) == 1, 15)
    assert metrics(srv.url)["a2wsgi_mp_rejected_total"] == 0
    assert "while loading" not in srv.log()


def test_orphaned_workers_still_die_with_a_sigkilled_front(server):
    srv = server("--workers", "2")
    workers = [psutil.Process(pid) for pid in srv.worker_pids()]
    old_zygote = kill_zygote(srv)
    assert wait_for(lambda: ready_workers(srv.url) == 2, 10)
    everyone = [*workers, *srv.descendants()]
    assert old_zygote not in everyone and len(everyone) == 3
    os.kill(srv.pid, signal.SIGKILL)
    assert wait_gone(everyone, 5) == []


def test_sigterm_to_every_process_still_drains(server):
    """systemd stops a whole cgroup at once: workers finish their request first."""
    srv = server("--workers", "2", "--graceful-timeout", "10")
    everyone = [psutil.Process(srv.pid), *srv.descendants()]

    async def scenario() -> int:
        async with httpx.AsyncClient() as client:
            slow = asyncio.ensure_future(client.get(srv.url + "/sleep?1.5", timeout=10))
            await busy(srv.url)
            for p in everyone:
                p.send_signal(signal.SIGTERM)
            return (await slow).status_code

    assert asyncio.run(scenario()) == 200
    srv.wait(15)
    assert wait_gone(everyone, 5) == []


def test_sigterm_to_a_worker_is_ignored_the_front_owns_its_life(server):
    """A stray SIGTERM (systemd's KillMode=control-group sends one to every process) neither cuts
    the worker's request nor ends the worker: only its front does that (hang-up or SIGKILL)."""
    srv = server("--workers", "1")

    async def scenario() -> tuple[int, int]:
        async with httpx.AsyncClient() as client:
            (victim,) = srv.worker_pids()
            slow = asyncio.ensure_future(client.get(srv.url + "/sleep?1", timeout=10))
            await busy(srv.url)
            os.kill(victim, signal.SIGTERM)
            response = await slow
            return response.status_code, victim

    status, victim = asyncio.run(scenario())
    assert status == 200
    assert httpx.get(srv.url + "/").status_code == 200
    assert srv.worker_pids() == {victim}


def test_many_threads_per_worker_all_get_their_connection(server):
    # Regression: 16+ slot sockets travel to the zygote in one SCM_RIGHTS message.
    srv = server("--workers", "2", "--threads", "20")
    results = load(srv.url, ["/sleep?0.2"] * 40, concurrency=40)
    assert all(s == 200 for _, s in results)
    assert httpx.get(srv.url + "/metrics").text.count("a2wsgi_mp_workers{") == 1
    assert ready_workers(srv.url) == 2


def test_a_request_abandoned_in_the_queue_never_reaches_a_worker(server):
    srv = server("--workers", "1")
    served = metrics(srv.url)["a2wsgi_mp_requests_total"]  # the readiness probe's

    async def scenario() -> int:
        async with httpx.AsyncClient() as client:
            slow = asyncio.ensure_future(client.get(srv.url + "/sleep?1", timeout=10))
            await busy(srv.url)
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(b"GET /sleep?0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await asyncio.to_thread(  # queued behind the busy worker...
                wait_for, lambda: metrics(srv.url)["a2wsgi_mp_queue_depth"] == 1, 15)
            writer.close()  # ...and abandoned
            await writer.wait_closed()
            return (await slow).status_code

    assert asyncio.run(scenario()) == 200
    assert wait_for(lambda: metrics(srv.url)["a2wsgi_mp_queue_depth"] == 0, 15)
    time.sleep(1.0)  # (a negative check: had it been dispatched, it would have run by now)
    assert metrics(srv.url)["a2wsgi_mp_requests_total"] == served + 1
    assert httpx.get(srv.url + "/").status_code == 200
    assert metrics(srv.url)["a2wsgi_mp_requests_total"] == served + 2


def _unread_download(port: int, size: int) -> socket.socket:
    """Ask for ``size`` bytes and read none of them (yet)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET /once?size={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def _read_response_body(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(1 << 20)
    return body


def test_a_slow_reader_does_not_hold_the_worker(server):
    """The front takes the response off the worker's hands (memory, then a temp file)."""
    srv = server("--workers", "1", app="tests.apps.transport_app:app")
    size = 8 * 1024 * 1024
    served = metrics(srv.url)["a2wsgi_mp_requests_total"]
    sock = _unread_download(srv.port, size)
    try:
        # The worker is done with the download (the front holds it) though its client read nothing...
        assert wait_for(lambda: (m := metrics(srv.url))["a2wsgi_mp_requests_total"] == served + 1
                        and m["a2wsgi_mp_busy_slots"] == 0, 15), metrics(srv.url)
        # ...so the one worker serves on.
        assert httpx.get(srv.url + "/hello", timeout=5).status_code == 200
        body = _read_response_body(sock)
        assert len(body) == size and body == httpx.get(srv.url + f"/once?size={size}", timeout=10).content
    finally:
        sock.close()


def test_without_a_response_buffer_the_slow_reader_holds_the_worker(server):
    srv = server("--workers", "1", "--response-buffer", "0", app="tests.apps.transport_app:app")
    sock = _unread_download(srv.port, 8 * 1024 * 1024)
    try:
        wait_busy(srv.url)
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(srv.url + "/hello", timeout=1.5)
        assert len(_read_response_body(sock)) == 8 * 1024 * 1024
    finally:
        sock.close()
