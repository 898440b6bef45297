"""Request-head limits (issue 11, items 1 and 2), end to end with raw sockets.

Four real servers on 127.0.0.1, started once for the module: the CLI with
httptools and with h11, and gunicorn with ``PoolWorker`` (httptools) and
``PoolH11Worker`` (h11), all with a 2 s header timeout.  Each case runs on
all four.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from .serverproc import HOST, Server, ServerSet, subprocess_env, wait_for

pytest.importorskip("gunicorn")

APP = "tests.apps.core_app:app"
HEADER_TIMEOUT = 2.0
MiB = 1024 * 1024
#: Generous bound on anything that should happen "at once" on a loaded machine.
SLACK = 20.0


def _cli(name: str, http: str, *extra: str) -> Server:
    argv = [sys.executable, "-m", "a2wsgi_mp", APP, "--host", HOST, "--port", "{port}", "--workers", "1",
            "--http", http, "--header-timeout", str(HEADER_TIMEOUT), "--graceful-timeout", "2", *extra]
    return Server(name, argv, env=subprocess_env(), probe="/hello")


def _gunicorn(name: str, worker: str) -> Server:
    argv = [sys.executable, "-m", "gunicorn", "-k", f"tests.apps.headlimits_workers.{worker}",
            "-b", f"{HOST}:{{port}}", "--no-control-socket", "-w", "1", "--threads", "1",
            "--keep-alive", "10", "--graceful-timeout", "2", APP]
    return Server(name, argv, env=subprocess_env(), probe="/hello")


@pytest.fixture(scope="module")
def servers(module_servers: ServerSet) -> dict[str, Server]:
    # all at once; each case waits for its own
    module_servers.add(_cli("cli-httptools", "httptools"))
    module_servers.add(_cli("cli-h11", "h11"))
    module_servers.add(_gunicorn("gunicorn-httptools", "ShortPoolWorker"))
    module_servers.add(_gunicorn("gunicorn-h11", "ShortPoolH11Worker"))
    return module_servers.servers


@pytest.fixture(params=["cli-httptools", "cli-h11", "gunicorn-httptools", "gunicorn-h11"])
def server(request: pytest.FixtureRequest, servers: dict[str, Server]) -> Server:
    return servers[request.param].wait_ready(60)


def front_process(server: Server) -> psutil.Process:
    """The process running uvicorn: the CLI itself, or gunicorn's (only) worker."""
    proc = psutil.Process(server.pid)
    if server.name.startswith("gunicorn"):
        return wait_for(lambda: (proc.children() or [None])[0], 30)
    return proc


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection((HOST, server.port), timeout=SLACK)
    return sock


def read_all(sock: socket.socket, deadline: float = SLACK) -> bytes:
    """Everything until the server closes (a reset after its answer counts as the end)."""
    sock.settimeout(deadline)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def status(data: bytes) -> int:
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data[9:12])


def exchange(server: Server, head: bytes) -> bytes:
    with connect(server) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before we were done: the answer is still there to read
        return read_all(sock)


def test_request_line_too_long_is_414(server: Server) -> None:
    reply = exchange(server, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(reply) == 414
    assert b"connection: close" in reply.lower()
    ok = exchange(server, b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status(ok) == 404 or status(ok) == 200


def test_too_many_fields_is_431(server: Server) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(101))
    assert status(exchange(server, b"GET /hello HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")) == 431
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(90))
    reply = exchange(server, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields + b"\r\n")
    assert status(reply) == 200


def test_too_long_field_is_431(server: Server) -> None:
    big = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    assert status(exchange(server, big)) == 431
    fits = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
    assert status(exchange(server, fits)) == 200


def test_bodies_without_newlines_are_not_measured_as_header_lines(server: Server) -> None:
    body = b"x" * 40000
    reply = exchange(server, b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert status(reply) == 200, reply[:300]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["size"] == len(body)
    # Nor in a read of its own, followed on the same connection by a head in pieces.
    with connect(server) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        time.sleep(0.1)
        sock.sendall(body)
        first = b""
        while b"}" not in first:
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        assert status(first) == 200, first[:300]
        sock.sendall(b"GET /hel")
        time.sleep(0.1)
        sock.sendall(b"lo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        second = read_all(sock)
    assert status(second) == 200, second[:300]


def test_a_20_mb_header_is_refused_while_reading_with_memory_bounded(server: Server) -> None:
    front = front_process(server)
    before = front.memory_info().rss
    peak = before
    sending = True

    def sample() -> None:
        nonlocal peak
        while sending:
            peak = max(peak, front.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with connect(server) as sock:
            sent = 0
            try:
                sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ")
                piece = b"a" * 65536
                while sent < 20 * MiB:
                    sock.sendall(piece)
                    sent += len(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass
            reply = read_all(sock)
    finally:
        sending = False
        sampler.join(5)
    assert status(reply) == 431
    # On main the front grew by more than the header (tens of MB); bounded, it
    # holds a few reads at most.
    assert peak - before < 8 * MiB, f"front RSS grew by {(peak - before) / MiB:.1f} MiB"


def test_idle_connection_is_closed_after_the_header_timeout(server: Server) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        data = read_all(sock, HEADER_TIMEOUT + SLACK)
        waited = time.monotonic() - started
    assert data == b"", "nothing was asked, nothing is answered (like nginx)"
    assert HEADER_TIMEOUT * 0.8 <= waited < HEADER_TIMEOUT + SLACK


def test_slowloris_is_closed_with_408(server: Server) -> None:
    head = b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    with connect(server) as sock:
        sock.settimeout(0.25)
        started = time.monotonic()
        reply = b""
        for byte in head:  # one byte every 0.25 s until the server gives up
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(4096)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            reply += chunk
            break
        reply += read_all(sock)
        waited = time.monotonic() - started
    assert status(reply) == 408
    assert waited < HEADER_TIMEOUT + SLACK


def test_header_timeout_spares_keep_alive_pauses_and_slow_bodies(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(SLACK)
        first = b""
        while not first.endswith(b"Hello, world!"):
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        assert status(first) == 200
        # Idle between requests for longer than the header timeout (but less
        # than the keep-alive timeout): uvicorn's keep-alive owns that wait.
        time.sleep(HEADER_TIMEOUT + 1.0)
        # Then a body that trickles in for longer than the header timeout.
        body = b"0123456789"
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\n")
        deadline = time.monotonic() + HEADER_TIMEOUT + 1.0
        for i in range(len(body)):
            sock.sendall(body[i : i + 1])
            time.sleep(max(0.0, (deadline - time.monotonic()) / (len(body) - i)))
        reply = read_all(sock)
    assert status(reply) == 200, reply[:300]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["size"] == 10


def test_header_names_with_underscores_are_dropped(server: Server) -> None:
    reply = exchange(server, b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             b"X_Forwarded_For: 6.6.6.6\r\nRemote_User: admin\r\nX-Fine: yes\r\n\r\n")
    assert status(reply) == 200
    environ = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert environ["HTTP_X_FINE"] == "yes"
    assert "HTTP_X_FORWARDED_FOR" not in environ
    assert "HTTP_REMOTE_USER" not in environ
    assert "6.6.6.6" not in json.dumps(environ)


def test_header_values_lose_their_trailing_whitespace(server: Server) -> None:
    """RFC 9110 §5.5: OWS around a value is not part of it.  llhttp keeps the trailing
    OWS; uvicorn (>= 0.55) strips it, h11 too, and so must our inlined ``on_header``."""
    reply = exchange(server, b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             b"X-Padded:  v  w \t \r\nX-Blank: \t\r\n\r\n")
    assert status(reply) == 200
    environ = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert environ["HTTP_X_PADDED"] == "v  w"
    assert environ["HTTP_X_BLANK"] == ""


def test_connection_cap_closes_new_connections_at_once(tmp_path: Path) -> None:
    with _cli("capped", "httptools", "--limit-connections", "4") as capped:
        held = [connect(capped) for _ in range(4)]
        try:
            wait_for(lambda: _refused_at_once(capped), 30)
        finally:
            for sock in held:
                sock.close()
        # Room again: served.
        reply = wait_for(lambda: _served(capped), 30)
        assert status(reply) == 200


def _refused_at_once(server: Server) -> bool:
    with connect(server) as sock:
        try:
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        except OSError:
            return True
        return read_all(sock, 5.0) == b""


def _served(server: Server) -> bytes | None:
    reply = exchange(server, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return reply if reply.startswith(b"HTTP/1.1 200") else None


def test_gunicorn_settings_reach_the_bounded_protocol(tmp_path: Path) -> None:
    from a2wsgi_mp.headlimits import HeadLimits

    from .test_gunicorn_worker import make_worker

    w = make_worker(tmp_path, limit_request_fields=10, limit_request_field_size=100, limit_request_line=200,
                    header_map="dangerous")
    limits = w.uvicorn_options()["http"].limits
    assert isinstance(limits, HeadLimits)
    assert (limits.line, limits.fields, limits.field_size, limits.header_timeout) == (200, 10, 100, 60.0)
    assert w.pool_options(APP)["header_map"] == "dangerous"
    unlimited = make_worker(tmp_path, limit_request_fields=0, limit_request_field_size=0, limit_request_line=0)
    limits = unlimited.uvicorn_options()["http"].limits
    assert limits.max_fields == 32768 and limits.max_head <= 16 * MiB  # "unlimited" is still bounded


def test_limit_values_follow_gunicorn() -> None:
    from a2wsgi_mp.headlimits import HeadLimits

    default = HeadLimits()
    assert (default.line, default.fields, default.field_size, default.header_timeout) == (4094, 100, 8190, 60.0)
    assert 800_000 < default.max_head < 850_000
    assert HeadLimits(head=65536).max_head == 65536
    capped = HeadLimits.gunicorn(99999, -1, -1)
    assert (capped.line, capped.fields, capped.field_size) == (8190, 32768, 8190)
    with pytest.raises(ValueError):
        HeadLimits(header_timeout=-1)


@pytest.mark.parametrize("args,needle", [
    (["--header-timeout", "-1"], "header_timeout"),
    (["--http", "spdy"], "--http"),
    (["--header-map", "keep"], "--header-map"),
    (["--limit-request-fields", "many"], "--limit-request-fields"),
])
def test_invalid_head_options_exit_2(args: list[str], needle: str) -> None:
    import subprocess

    from .serverproc import free_port

    result = subprocess.run([sys.executable, "-m", "a2wsgi_mp", APP, "--port", str(free_port()), *args],
                            env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert needle in result.stderr



@pytest.mark.parametrize("tail, refused", [
    (b"\x00\x01garbage that is no request\r\n\r\n", 400),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
], ids=["garbage", "too-long"])
def test_a_request_pipelined_before_a_bad_one_is_answered_first(server: Server, tail: bytes, refused: int) -> None:
    # gunicorn answers the valid request, then refuses what follows it: one packet, two answers.
    reply = exchange(server, b"GET /sleep?t=0.2 HTTP/1.1\r\nHost: x\r\n\r\n" + tail)
    assert [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)] == [200, refused], reply[:600]
    assert b'"pid"' in reply.split(b"HTTP/1.1 %d" % refused)[0]
