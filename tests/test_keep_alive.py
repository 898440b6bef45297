"""uvicorn's keep-alive timeout under our httptools protocol, which keeps one timer
per connection re-armed when it fires (headlimits/httptools_proto.py, _LazyKeepAlive)
instead of a timer per request: an idle connection still closes after
``--timeout-keep-alive`` seconds of idleness, counted from its last response, and
a connection in use never does.  The h11 cell (uvicorn's own timer) is the reference."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from .serverproc import HOST, Server, ServerSet, subprocess_env

APP = "tests.apps.core_app:app"
KEEP_ALIVE = 2
#: The pause between two requests on a connection in use: well short of the timeout, since a
#: request must be in before the timeout however late a busy machine wakes the client up.
PAUSE = 0.25 * KEEP_ALIVE
#: Generous bound on anything that should happen "at once" on a loaded machine.
SLACK = 20.0


def _cli(http: str) -> Server:
    argv = [sys.executable, "-m", "a2wsgi_mp", APP, "--host", HOST, "--port", "{port}", "--workers", "1",
            "--http", http, "--timeout-keep-alive", str(KEEP_ALIVE), "--graceful-timeout", "2"]
    return Server(f"keepalive-{http}", argv, env=subprocess_env(), probe="/hello")


@pytest.fixture(scope="module")
def servers(module_servers: ServerSet) -> dict[str, Server]:
    module_servers.add(_cli("httptools"))
    module_servers.add(_cli("h11"))
    return module_servers.servers


@pytest.fixture(params=["httptools", "h11"])
def server(request: pytest.FixtureRequest, servers: dict[str, Server]) -> Server:
    return servers[f"keepalive-{request.param}"].wait_ready(60)


def _hello(sock: socket.socket) -> float:
    """One request on ``sock``; the monotonic time its whole response was in."""
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = b""
    while not reply.endswith(b"Hello, world!"):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {reply!r}"
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    return time.monotonic()


def test_a_connection_in_use_outlives_the_keep_alive_timeout(server: Server) -> None:
    """Requests 0.5 s apart for 4 s: each pause is shorter than the timeout, so the
    timer armed after the first response (due at 2 s) must look again, not close."""
    with socket.create_connection((HOST, server.port), timeout=SLACK) as sock:
        started = _hello(sock)
        while time.monotonic() - started < 2 * KEEP_ALIVE:
            time.sleep(PAUSE)  # (the pause under test: shorter than the timeout)
            _hello(sock)


def test_an_idle_connection_closes_after_the_keep_alive_timeout(server: Server) -> None:
    with socket.create_connection((HOST, server.port), timeout=SLACK) as sock:
        _hello(sock)
        time.sleep(PAUSE)
        last = _hello(sock)  # the timer armed after the first response is due before this one's timeout
        sock.settimeout(SLACK)
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
        idle = time.monotonic() - last
    assert KEEP_ALIVE - 0.05 <= idle < KEEP_ALIVE + SLACK
