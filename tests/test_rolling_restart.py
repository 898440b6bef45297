"""A rolling restart of two instances behind a plain TCP round-robin balancer loses no request.

The balancer (in the test, as HAProxy in TCP mode with an HTTP health check would) sends each new
connection to the next backend whose ``--health-path`` answers 200, checked every 0.5 s.  Each
instance in turn gets SIGTERM: during its ``--shutdown-delay`` health answers 503 while requests
are still served, so the balancer stops choosing it before it stops accepting; a fresh instance
then takes its port.  Clients send requests all along, a fresh connection each.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import threading

import httpx

from .serverproc import HOST, Server, cli_command, free_port, subprocess_env, wait_for

APP = "tests.apps.core_app:app"
DELAY = 2.5  # > CHECK_EVERY + CHECK_TIMEOUT with a second to spare: the balancer has seen the 503 by then
CHECK_EVERY = 0.5  # (HAProxy checks every 2 s by default)
CHECK_TIMEOUT = 1.0  # (a check slower than this marks a backend down: not the only live one on a busy machine)


class Balancer:
    """Round-robin over the backends whose health check answers 200, in a thread of its own."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.healthy: set[int] = set()
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._next = itertools.cycle(backends)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Balancer":
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._proxy, HOST, self.port)
        checks = [asyncio.ensure_future(self._check(port)) for port in self.backends]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in checks:
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)
        await server.wait_closed()

    async def _check(self, port: int) -> None:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT) as client:
            while True:
                try:
                    ok = (await client.get(f"http://{HOST}:{port}/healthz")).status_code == 200
                except httpx.HTTPError:
                    ok = False
                (self.healthy.add if ok else self.healthy.discard)(port)
                await asyncio.sleep(CHECK_EVERY)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(len(self.backends)):
            port = next(self._next)
            if port in self.healthy:
                break
        else:
            writer.close()  # nobody healthy: the client sees a failure
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.write_eof()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        up_writer.close()
        writer.close()


def _instance(tmp_path, port: int, name: str) -> Server:  # type: ignore[no-untyped-def]
    argv = [*cli_command(), APP, "--host", HOST, "--port", str(port), "--workers", "1", "--health-path", "/healthz",
            "--shutdown-delay", str(DELAY), "--graceful-timeout", "5", "--no-access-log"]
    server = Server(name, argv, log_dir=tmp_path, env=subprocess_env(), probe="/healthz")
    server.port = port
    return server


def test_rolling_restart_of_two_instances_loses_no_request(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ports = [free_port(), free_port()]
    servers = [_instance(tmp_path, port, f"first-{i}").start() for i, port in enumerate(ports)]
    failures: list[str] = []
    served: dict[int, int] = {}
    stop = threading.Event()
    try:
        for server in servers:
            server.wait_ready()
        with Balancer(ports) as balancer:
            assert wait_for(lambda: balancer.healthy == set(ports), 10)

            def client() -> None:
                while not stop.is_set():
                    try:  # a fresh connection each time: the balancer picks a backend per connection
                        r = httpx.get(f"http://{HOST}:{balancer.port}/pid", timeout=10,
                                      headers={"connection": "close"})
                        if r.status_code == 200:
                            pid = r.json()["pid"]
                            served[pid] = served.get(pid, 0) + 1
                        else:
                            failures.append(f"{r.status_code} {r.text[:100]}")
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

            threads = [threading.Thread(target=client) for _ in range(4)]
            for t in threads:
                t.start()
            try:
                for i, port in enumerate(ports):
                    old = servers[i]
                    old.signal(signal.SIGTERM)
                    assert old.wait(DELAY + 15) == 0, old.log()
                    servers[i] = _instance(tmp_path, port, f"second-{i}").start().wait_ready()
                    assert wait_for(lambda: balancer.healthy == set(ports), 10)
                    fresh = servers[i].worker_pids()
                    assert wait_for(lambda fresh=fresh: sum(served.get(pid, 0) for pid in fresh) >= 10, 10), served
            finally:
                stop.set()
                for t in threads:
                    t.join(15)
    finally:
        for server in servers:
            server.stop()
    assert not failures, failures[:5]
    assert len(served) == 4, served  # the worker of each of the four instances served
