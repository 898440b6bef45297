"""An experiment, not a server: WSGI workers that read and write their clients themselves.

    python -m benchmarks.worker_http APP --port PORT [--workers 2]

What is the least a design can cost per request on a real page when the HTTP is
done in Python?  Here there is no front at all: the app is loaded once, its heap
frozen, and N forked workers listen on the port (SO_REUSEPORT); each runs one
``selectors`` loop over its own keep-alive connections, parses with httptools,
calls the app *in the loop* and writes the whole response with one ``sendall``.
It is gunicorn's sync worker with httptools and keep-alive, or a2wsgi_mp with
the front's CPU at zero and no IPC: a floor for every design that keeps the
HTTP in Python, to set beside granian (Rust HTTP, same app) on R1-R3.

Everything a server owes its users is missing, which is the point of the
comparison and why it must never be one: a slow client holds its worker (and
every connection of that worker waits behind the app), no limits, no timeouts,
no request bodies beyond what one read brings, no streaming, no supervision.
"""

from __future__ import annotations

import argparse
import ctypes
import email.utils
import gc
import http
import importlib
import io
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any, Callable

import httptools

_LINES: dict[int, bytes] = {}


def _status_line(status: str) -> bytes:
    code = int(status[:3])
    line = _LINES.get(code)
    if line is None:
        line = _LINES[code] = b"HTTP/1.1 %d %s\r\n" % (code, http.HTTPStatus(code).phrase.encode())
    return line


class _Date:
    """A ``date`` header (and ``server``), refreshed once a second, as uvicorn and granian send."""

    second = 0
    value = b""

    def headers(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\nserver: py\r\n"
        return self.value


_DATE = _Date()


class _Conn:
    """One client connection's parser state; complete requests queue in ``ready``."""

    def __init__(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        self.sock = sock
        self.peer = peer
        self.parser = httptools.HttpRequestParser(self)
        self.ready: list[tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes, bool]] = []
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def read(self) -> bool:
        """Read what the socket has and parse it; False: the client is gone (or sent garbage)."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionError, BlockingIOError):
            return False
        if not data:
            return False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            return False
        return True

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.ready.append((self.parser.get_method(), self.url, self.headers, b"".join(self.body),
                           self.parser.should_keep_alive()))


def _environ(peer: tuple[str, int], method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
             port: int) -> dict[str, Any]:
    path, _, query = url.partition(b"?")
    env: dict[str, Any] = {
        "REQUEST_METHOD": method.decode("latin-1"), "SCRIPT_NAME": "",
        "PATH_INFO": path.decode("latin-1"), "QUERY_STRING": query.decode("latin-1"),
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(port), "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": peer[0], "REMOTE_PORT": str(peer[1]),
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    for name, value in headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            env[key] = value.decode("latin-1")
        else:
            env["HTTP_" + key] = value.decode("latin-1")
    return env


def _respond(app: Callable[..., Any], env: dict[str, Any], keep_alive: bool) -> bytes:
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    status, headers = started
    head = [_status_line(status), _DATE.headers()]
    length = False
    for name, value in headers:
        length = length or name.lower() == "content-length"
        head.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not length:
        head.append(b"content-length: %d\r\n" % len(body))
    if not keep_alive:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + body


def serve(listener: socket.socket, app: Callable[..., Any], port: int) -> None:
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            conn: _Conn | None = key.data
            if conn is None:
                try:
                    sock, peer = listener.accept()
                except BlockingIOError:
                    continue  # another worker took it
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(sock, selectors.EVENT_READ, _Conn(sock, peer))
                continue
            keep = conn.read()
            while keep and conn.ready:
                method, url, headers, body, keep = conn.ready.pop(0)
                try:
                    conn.sock.sendall(_respond(app, _environ(conn.peer, method, url, headers, body, port), keep))
                except ConnectionError:
                    keep = False
            if not keep:
                sel.unregister(conn.sock)
                conn.sock.close()


def start(doc: str, depth: bool = False) -> tuple[argparse.Namespace, Callable[..., Any], Callable[[], None]]:
    """The experiments' command line and set-up: (arguments, the app loaded and its heap frozen,
    what a forked child calls first so that it never outlives its parent)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    if depth:
        parser.add_argument("--depth", type=int, default=2, help="requests in flight per worker")
    args = parser.parse_args()
    module, attr = args.app.split(":")
    app = getattr(importlib.import_module(module), attr)
    gc.freeze()  # as a2wsgi_mp's zygote does before it forks workers
    libc = ctypes.CDLL(None, use_errno=True)
    return args, app, lambda: libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main() -> None:
    args, app, tie_to_parent = start(__doc__)
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            tie_to_parent()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            # A listening socket per worker (SO_REUSEPORT): the kernel spreads connections by
            # their addresses; one shared socket let the first worker to wake take most of wrk's.
            listener = socket.create_server((args.host, args.port), backlog=2048, reuse_port=True)
            listener.setblocking(False)
            serve(listener, app, args.port)
            os._exit(0)
        children.append(pid)

    def stop(signum: int, frame: Any) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            os.waitpid(pid, 0)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
