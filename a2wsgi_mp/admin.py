"""The admin listener: metrics and status on a socket that is not the public one.

``--admin-socket PATH`` (a Unix socket: reachable only by who may open the
file) and/or ``--admin-bind HOST:PORT`` (for a Prometheus scrape; keep it on a
private interface) serve, over plain HTTP/1.1 (parsed by h11):

* ``GET /metrics``: the Prometheus exposition (OpenMetrics when asked for);
* ``GET /status``: the pool's snapshot as JSON (what ``a2wsgi-mp status`` shows).

None of it crosses the pool's workers or the public listener's limits and
access log.  :func:`fetch` is the matching client (the status command, and a
``--fronts N`` parent summing its fronts' snapshots).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from typing import Any, Awaitable, Callable

import h11

from .pool import metrics

__all__ = ["AdminServer", "fetch", "parse_bind"]

logger = logging.getLogger("a2wsgi_mp")

#: Seconds an admin client has to send its request, and a fetch to get its answer.
TIMEOUT = 10.0

Snapshot = Callable[[], Awaitable[dict[str, Any]]]


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"admin bind must be HOST:PORT with a port in 1-65535, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _claim_unix_path(path: str) -> None:
    """Remove a stale socket file at ``path``; refuse one a live server answers on."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"admin socket {path!r} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left by a process that died
    else:
        raise ValueError(f"admin socket {path!r} is in use by another server")
    finally:
        probe.close()


class AdminServer:
    """Answers ``/metrics`` and ``/status`` from ``snapshot()`` on its sockets."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._servers: list[asyncio.Server] = []
        self._paths: list[str] = []

    async def start(self, unix_path: str | None = None, bind: str | None = None) -> None:
        if unix_path:
            _claim_unix_path(unix_path)
            self._servers.append(await asyncio.start_unix_server(self._serve, unix_path))
            self._paths.append(unix_path)
        if bind:
            host, port = parse_bind(bind)
            self._servers.append(await asyncio.start_server(self._serve, host, port))

    @property
    def addresses(self) -> list[Any]:
        return [s.getsockname() for server in self._servers for s in server.sockets]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers = []
        for path in self._paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._paths = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            request = await asyncio.wait_for(_next_request(conn, reader), TIMEOUT)
            if request is None:
                return
            status, content_type, body = await self._answer(request)
            headers = [("content-type", content_type), ("content-length", str(len(body))), ("connection", "close")]
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
            if request.method != b"HEAD":
                writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        except (asyncio.TimeoutError, h11.RemoteProtocolError, ConnectionError):
            pass
        except Exception:
            logger.exception("admin listener: error answering a request")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, request: h11.Request) -> tuple[int, str, bytes]:
        if request.method not in (b"GET", b"HEAD"):
            return 405, "text/plain; charset=utf-8", b"GET /metrics or /status\n"
        path = request.target.split(b"?", 1)[0]
        if path not in (b"/metrics", b"/status"):
            return 404, "text/plain; charset=utf-8", b"not found: try /metrics or /status\n"
        try:
            snap = await self.snapshot()
        except (OSError, asyncio.TimeoutError) as exc:
            return 503, "text/plain; charset=utf-8", f"no figures: {exc}\n".encode()
        if path == b"/metrics":
            accept = next((v.decode("latin-1") for k, v in request.headers if k == b"accept"), None)
            body, content_type = metrics.render(snap, accept)
            return 200, content_type, body
        return 200, "application/json", json.dumps(snap).encode()


async def _next_request(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            if not data:
                return None
        elif isinstance(event, h11.Request):
            return event
        else:
            return None


async def fetch(target: str, path: str = "/status", timeout: float = TIMEOUT) -> tuple[int, bytes]:
    """GET ``path`` from an admin listener at ``target`` (a socket path, or HOST:PORT): (status, body)."""

    async def go() -> tuple[int, bytes]:
        if "/" in target or not target.rpartition(":")[2].isdigit():
            reader, writer = await asyncio.open_unix_connection(target)
            host = "localhost"
        else:
            host, port = parse_bind(target)
            reader, writer = await asyncio.open_connection(host, port)
        conn = h11.Connection(h11.CLIENT)
        try:
            writer.write(conn.send(h11.Request(method="GET", target=path,
                                               headers=[("host", host), ("connection", "close")])))
            writer.write(conn.send(h11.EndOfMessage()))
            status, chunks = 0, []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return status, b"".join(chunks)
        finally:
            writer.close()

    return await asyncio.wait_for(go(), timeout)
