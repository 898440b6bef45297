"""An experiment, not a server: the same pool behind a front without ASGI.

    python -m benchmarks.lean_front APP --port PORT [--workers 2]

What would a2wsgi_mp's front cost per request without uvicorn's per-request
machinery (a task, a ``RequestResponseCycle``, ASGI message dicts, the proxy
headers middleware, ``send()`` validating what the worker already checked, two
writes per response)?  Here an ``asyncio.Protocol`` on httptools calls the
pool's dispatcher directly: a parsed request goes to an idle slot (or waits in
the pool's FIFO), the worker's complete answer comes back through the
exchange's wake-up hook and leaves in one write.  GET/HEAD-less, body-less
requests with complete responses only (``/hello``, ``/shape``): enough to
measure, far from enough to serve — no request bodies, no streaming, no
timeouts, no limits.  Compare its front CPU per request with a2wsgi_mp's on
the same page (``benchmarks.front_shape`` figures, docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import http
import time
from collections import deque
from typing import Any

import httptools

from a2wsgi_mp import WSGIPool
from a2wsgi_mp.ipc import protocol

_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _LINES.get(status)
    if line is None:
        line = _LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())
    return line


class _Date:
    """uvicorn's ``date`` and ``server`` headers, refreshed once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.value = b""

    def headers(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\nserver: lean\r\n"
        return self.value


_DATE = _Date()


class _Waiter:
    """Stands for a future in the pool's waiter queue and in an exchange: a callback."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def done(self) -> bool:
        return False

    def set_result(self, value: Any) -> None:
        self.fn(value)

    def cancel(self) -> None:
        pass


class LeanHTTP(asyncio.Protocol):
    def __init__(self, pool: Any, server: tuple[str, int]) -> None:
        self.pool = pool
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.pending: deque[dict[str, Any]] = deque()  # pipelined heads waiting their turn
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_message_complete(self) -> None:
        parsed = httptools.parse_url(self.url)
        head = {
            "method": self.parser.get_method().decode(), "scheme": "http", "path": parsed.path.decode("latin-1"),
            "query_string": parsed.query or b"", "root_path": "", "headers": self.headers,
            "client": list(self.client[:2]) if self.client else None, "server": list(self.server),
            "http_version": self.parser.get_http_version(),
        }
        self.pending.append(head)
        if not self.busy:
            self._next()

    # dispatch
    def _next(self) -> None:
        if not self.pending or self.transport is None:
            return
        self.busy = True
        slot = self.pool.take_idle()
        if slot is None:
            self.pool._waiters.append(_Waiter(self._dispatch))
        else:
            self._dispatch(slot)

    def _dispatch(self, slot: Any) -> None:
        exchange = self.pool.begin(slot)
        exchange._waiter = _Waiter(lambda _: self._answer(exchange))
        slot.pipe.send_request(exchange.rid, self.pending.popleft(), b"", 0)

    def _answer(self, exchange: Any) -> None:
        while exchange._events:
            event = exchange._events.popleft()
            if isinstance(event, protocol.Start) and event.done and self.transport is not None:
                parts = [_status_line(event.status), _DATE.headers()]
                for name, value in event.headers:
                    parts += (name, b": ", value, b"\r\n")
                parts += (b"\r\n", event.body)
                self.transport.write(b"".join(parts))
                exchange.stop_clock()
                self.busy = False
                self._next()
                return
            if isinstance(event, (protocol.Start, protocol.Body, protocol.End, protocol.Abort)):
                continue  # (streamed responses are out of this experiment's scope)
        exchange._waiter = _Waiter(lambda _: self._answer(exchange))  # more to come


async def serve(app: str, host: str, port: int, workers: int) -> None:
    pool = WSGIPool(app, workers=workers, threads=1)
    await pool.startup()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: LeanHTTP(pool.dispatcher, (host, port)), host, port, backlog=2048)
    print(f"lean front on http://{host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        server.close()
        await pool.shutdown(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lean_front")
    parser.add_argument("app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.app, args.host, args.port, args.workers))


if __name__ == "__main__":
    main()
