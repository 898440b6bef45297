"""The direct stream end to end: a worker writes a streamed body to the client itself.

Real CLI servers (one worker, one thread: whether a worker is held shows at
once) and real clients — curl, httpx, raw sockets parsed by h11 — on the cases
that can go wrong when two processes write one connection: chunked and
Content-Length framing, keep-alive and pipelining after a direct body, HTTP/1.0,
a client that stops reading (the rest goes back to the front; the worker serves
others), a client that leaves (the app's ``close()`` runs), a worker killed while
it writes, an app short of its Content-Length, and the option turned off.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from .apps.direct_app import pattern
from .serverproc import HOST, Server, metrics, wait_for
from .wire import h11_responses

APP = "tests.apps.direct_app:app"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("direct-records")


@pytest.fixture(scope="module")
def server(records: Path):
    srv = Server.cli(APP, "--workers", "1", "--threads", "1", "--timeout", "30", "--metrics-path", "/metrics",
                     env={"DIRECT_RECORD_DIR": str(records)}, ready_path="/hello").start()
    try:
        yield srv.wait_ready()
    finally:
        assert srv.stop() == []


def _directs(server: Server) -> float:
    return metrics(server.url)["a2wsgi_mp_direct_streams_total"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


@pytest.mark.parametrize("length", ["1", "0"])
def test_a_streamed_body_is_written_by_the_worker_whole_and_in_order(server: Server, length: str) -> None:
    before = _directs(server)
    n = 12 * MB + 12345
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.get("/stream", params={"n": n, "chunk": 100_000, "length": length})
        assert r.status_code == 200 and len(r.content) == n and _sha(r.content) == _sha(pattern(n))
        if length == "1":
            assert r.headers["content-length"] == str(n)
        else:
            assert r.headers["transfer-encoding"] == "chunked"
        # The same kept-alive connection serves on, through the front.
        assert client.get("/hello").text == "Hello, world!"
        assert client.head("/stream", params={"n": 5000}).status_code == 200  # HEAD: nothing to offer
    assert _directs(server) == before + 1


def test_a_large_body_in_one_piece_is_offered_a_small_one_is_not(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        before = _directs(server)
        small = client.get("/whole", params={"n": 200_000})
        assert small.content == pattern(200_000) and _directs(server) == before
        big = client.get("/whole", params={"n": 6 * MB})
        assert big.headers["content-length"] == str(6 * MB) and big.content == pattern(6 * MB)
        assert _directs(server) == before + 1
        assert client.get("/hello").text == "Hello, world!"


def test_curl_downloads_a_large_body(server: Server, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    n = 48 * MB
    out = tmp_path / "body"
    done = subprocess.run(["curl", "-sS", "--max-time", "60", "-o", str(out), "-w", "%{http_code}",
                           f"{server.url}/stream?n={n}&chunk=65536"], capture_output=True, text=True, timeout=90)
    assert done.stdout == "200", done.stderr
    assert out.stat().st_size == n and _sha(out.read_bytes()) == _sha(pattern(n))


def test_keep_alive_and_pipelining_after_a_direct_body(server: Server) -> None:
    requests = [b"GET /stream?n=3000000&length=0 HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /stream?n=2500000&chunk=70000 HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
    with socket.create_connection((HOST, server.port), timeout=30) as s:
        s.sendall(b"".join(requests))  # all at once: pipelined behind the direct bodies
        raw = _read_all(s)
    responses = h11_responses(raw, ["GET"] * 4)
    assert [a.response.status_code for a in responses] == [200] * 4
    assert responses[0].body == pattern(3000000) and responses[2].body == pattern(2500000)
    assert responses[1].body == responses[3].body == b"Hello, world!"


def test_http_1_0_gets_the_body_and_the_connection_closed(server: Server) -> None:
    n = 5 * MB
    with socket.create_connection((HOST, server.port), timeout=30) as s:
        s.sendall(b"GET /stream?n=%d HTTP/1.0\r\nHost: x\r\n\r\n" % n)
        raw = _read_all(s)  # the server closes it
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == pattern(n)


def test_a_client_that_stops_reading_does_not_hold_the_worker(server: Server) -> None:
    # 20 MB: more than the sockets' buffers (so the worker stalls and hands the rest back),
    # less than the front's response buffer (32 MiB: so the worker is then free).
    n = 20 * MB
    with socket.create_connection((HOST, server.port), timeout=60) as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        slow.sendall(b"GET /stream?n=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % n)
        # The only worker answers someone else while this client reads nothing.
        with httpx.Client(base_url=server.url, timeout=30) as other:
            assert wait_for(lambda: other.get("/hello").text == "Hello, world!", 30, what="the worker to be free")
        raw = _read_all(slow)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == n and _sha(body) == _sha(pattern(n))


def test_a_client_that_leaves_ends_the_app_and_frees_the_worker(server: Server, records: Path) -> None:
    token = uuid.uuid4().hex
    with socket.create_connection((HOST, server.port), timeout=30) as s:
        s.sendall(f"GET /slow?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = b""
        while len(got) < 3 * 65536:  # it streams: the worker writes it
            got += s.recv(65536)
    wait_for(lambda: (records / token).exists(), 30, what="the app's close() after the client left")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/hello").text == "Hello, world!"


def test_a_worker_killed_while_it_writes_cuts_the_response(server: Server) -> None:
    with socket.create_connection((HOST, server.port), timeout=30) as s:
        s.sendall(b"GET /slow?every=0.05 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got or len(got) < 200_000:
            got += s.recv(65536)
        pid = int(got.split(b"x-pid: ", 1)[1].split(b"\r\n", 1)[0])
        os.kill(pid, signal.SIGKILL)
        try:
            rest = _read_all(s)
        except ConnectionResetError:
            rest = b""
    # Cut: the chunked body never got its last chunk.
    assert not (got + rest).endswith(b"0\r\n\r\n")
    with httpx.Client(base_url=server.url, timeout=30) as client:  # a fresh worker serves
        assert wait_for(lambda: client.get("/hello").headers["x-pid"] != str(pid), 30, what="a new worker")


def test_an_app_short_of_its_content_length_is_cut(server: Server) -> None:
    with socket.create_connection((HOST, server.port), timeout=30) as s:
        s.sendall(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = _read_all(s)  # the connection is closed, short of 300,000 bytes
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-length: 300000" in head and len(body) == 200_000
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/hello").text == "Hello, world!"


@pytest.mark.parametrize("options", [["--no-direct-stream"], ["--http", "h11"]], ids=["turned-off", "h11"])
def test_without_direct_stream_the_front_relays(records: Path, options: list[str]) -> None:
    """Turned off, or under h11 (whose cycle the front does not drive): the relay, as before."""
    with Server.cli(APP, "--workers", "1", *options, "--metrics-path", "/metrics",
                    env={"DIRECT_RECORD_DIR": str(records)}, ready_path="/hello") as srv:
        srv.wait_ready()
        n = 3 * MB
        r = httpx.get(f"{srv.url}/stream", params={"n": n, "length": "0"}, timeout=30)
        assert r.content == pattern(n)
        assert _directs(srv) == 0
