"""Slow uploaders for P4: N raw-socket clients trickling a chunked POST body.

Each client connects to 127.0.0.1:PORT, sends the request head of a chunked
``POST /upload`` and then one byte every ``--interval`` seconds.  After
``--duration`` seconds every client sends the last chunk and waits (at most
``--drain`` seconds) for the answer.  A client whose connection is refused or
reset reconnects until the deadline.  Everything is bounded in time; a JSON
summary goes to stdout.

With ``--toggle`` the clients connect and send their heads, then trickle only
while switched on: SIGUSR1 switches the trickle on, SIGUSR2 off (the connections
stay open and silent), SIGTERM ends the run now (last chunks, drain, summary).
``benchmarks.p4_paired`` uses it to measure idle and loaded hello rps
alternately, a few seconds apart, on servers that run side by side.

    python -m benchmarks.slowclients --port 8000 --clients 2000 --duration 6

The generator must cost far less than what it measures: 2,000 clients make
20,000 writes a second.  So there is no task, timer or ``drain()`` per write:
the clients are plain protocols, and one ticker writes to a tenth of them every
tenth of the interval (each client still sends one byte per interval, and the
writes are spread over it as independent clients' would be).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

HEAD = (
    "POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n"
    "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
)
CHUNK = b"1\r\nx\r\n"
LAST = b"0\r\n\r\n"
#: A client whose unsent bytes pile up beyond this (the server stopped reading) skips its tick.
STALLED = 64 * 1024
#: Ticks per interval: each writes to one group of clients.
GROUPS = 10


class Uploader(asyncio.Protocol):
    """One slow client's connection."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.sent = 0
        self.finished = False  # the last chunk went out
        self.response = bytearray()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def tick(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size() > STALLED:
            return
        transport.write(CHUNK)
        self.sent += 1
        self.stats["bytes"] += 1

    def finish(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(LAST)
            self.finished = True

    def data_received(self, data: bytes) -> None:
        self.response += data

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            key = type(exc).__name__
            self.stats["errors"][key] = self.stats["errors"].get(key, 0) + 1
        if not self.closed.done():
            self.closed.set_result(None)

    def settle(self) -> None:
        """Count this client's answer (after the drain)."""
        stats = self.stats
        head, sep, body = bytes(self.response).partition(b"\r\n\r\n")
        if not sep:
            stats["no_answer"] += 1
            return
        parts = head.split(b" ", 2)
        status = parts[1].decode() if len(parts) > 1 else "?"
        stats["status"][status] = stats["status"].get(status, 0) + 1
        if status == "200":
            if body.strip() == str(self.sent).encode():
                stats["complete_ok"] += 1
            else:
                stats["bad_count"] += 1


async def _connect(port: int, stats: dict[str, Any]) -> Uploader | None:
    loop = asyncio.get_running_loop()
    try:
        _, client = await asyncio.wait_for(
            loop.create_connection(lambda: Uploader(stats), "127.0.0.1", port), 2.0)
    except (OSError, asyncio.TimeoutError) as exc:
        key = type(exc).__name__
        stats["errors"][key] = stats["errors"].get(key, 0) + 1
        return None
    stats["connects"] += 1
    assert client.transport is not None
    client.transport.write(HEAD.format(port=port).encode())
    return client


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    stats: dict[str, Any] = {"clients": args.clients, "connects": 0, "bytes": 0, "status": {}, "complete_ok": 0,
                             "bad_count": 0, "no_answer": 0, "errors": {}}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.duration
    active = [not args.toggle]
    if args.toggle:
        import signal

        ended: list[bool] = []
        loop.add_signal_handler(signal.SIGUSR1, active.__setitem__, 0, True)
        loop.add_signal_handler(signal.SIGUSR2, active.__setitem__, 0, False)
        loop.add_signal_handler(signal.SIGTERM, ended.append, True)
    slots: list[Uploader | None] = [None] * args.clients
    done: list[Uploader] = []  # clients whose connection dropped: counted as they are
    connecting: set[int] = set()
    reconnects: set[asyncio.Future[None]] = set()  # kept, and awaited at the end: no task left pending

    async def fill(i: int) -> None:
        if i in connecting or loop.time() >= deadline:
            return
        connecting.add(i)
        try:
            slots[i] = await _connect(args.port, stats)
        finally:
            connecting.discard(i)

    # Connect in batches of 20, 10 ms apart, so the listen backlog never overflows.
    for start in range(0, args.clients, 20):
        await asyncio.gather(*(fill(i) for i in range(start, min(start + 20, args.clients))))
        await asyncio.sleep(0.01)

    step = args.interval / GROUPS
    tick = 0
    while loop.time() < deadline and not (args.toggle and ended):
        if not active[0]:
            await asyncio.sleep(step)
            continue
        group = tick % GROUPS
        for i in range(group, args.clients, GROUPS):
            client = slots[i]
            if client is not None and client.closed.done():  # reset by the server: reconnect
                done.append(client)
                client = slots[i] = None
            if client is None:
                if i not in connecting:  # (refused earlier: try again, as a real client would)
                    task = asyncio.ensure_future(fill(i))
                    reconnects.add(task)
                    task.add_done_callback(reconnects.discard)
                continue
            client.tick()
        tick += 1
        await asyncio.sleep(step)

    if reconnects:  # (each gives up within its 2 s connect timeout)
        await asyncio.wait(list(reconnects))
    live = [c for c in slots if c is not None]
    for client in live:
        client.finish()
    if live:
        await asyncio.wait([c.closed for c in live], timeout=args.drain)
    for client in live:
        if client.transport is not None:
            client.transport.close()
        client.settle()
    stats["dropped_connections"] = len(done)
    return stats


class Uploaders:
    """This module run as a child process (a session of its own) for a ``with`` block: started on
    entry, killed on exit if still running; :meth:`result` waits for its JSON summary."""

    def __init__(self, port: int, clients: int, duration: float, drain: float) -> None:
        from .configs import REPO  # (the module runs as a script too: imported only by its callers)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.slowclients", "--port", str(port), "--clients", str(clients),
             "--duration", f"{duration:g}", "--drain", f"{drain:g}"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def result(self, timeout: float) -> dict[str, Any]:
        """The summary the clients print when done, or ``{"error": ...}`` with their last output."""
        out, err = self.proc.communicate(timeout=timeout)
        try:
            return dict(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            return {"error": (err or out)[-300:]}

    def __enter__(self) -> "Uploaders":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--drain", type=float, default=3.0)
    parser.add_argument("--toggle", action="store_true", help="trickle only between SIGUSR1 and SIGUSR2 (see above)")
    args = parser.parse_args()
    try:
        import uvloop
        stats = uvloop.run(main_async(args))
    except ImportError:
        stats = asyncio.run(main_async(args))
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
