"""End to end: real ``a2wsgi-mp`` and uvicorn processes on 127.0.0.1, driven by httpx.

Every server is started once per session (all in parallel), and stopped in
teardown by pid (TERM, wait, KILL); teardown fails if any of their descendant
processes (zygote, workers) outlives them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .serverproc import HOST, Server, ServerSet, cli_command, subprocess_env, wait_for

APP = "tests.apps.core_app:app"
COMMON = ["--host", HOST, "--port", "{port}", "--graceful-timeout", "5"]
MiB = 1024 * 1024


@pytest.fixture(scope="session")
def core_servers(tmp_path_factory: pytest.TempPathFactory):
    record_dir = tmp_path_factory.mktemp("core-records")
    log_dir = tmp_path_factory.mktemp("core-logs")
    env = subprocess_env(CORE_RECORD_DIR=str(record_dir))
    cli = cli_command()
    servers = ServerSet()
    servers.record_dir = record_dir  # type: ignore[attr-defined]
    servers.add(Server("main", [*cli, APP, *COMMON, "--workers", "2"], log_dir, env))
    servers.add(Server("limited", [*cli, APP, *COMMON, "--workers", "1", "--max-body-size", "1M"], log_dir, env))
    servers.add(Server("threaded", [*cli, APP, *COMMON, "--workers", "1", "--threads", "4"], log_dir, env))
    servers.add(Server("spawn", [*cli, APP, *COMMON, "--workers", "1", "--start-method", "spawn"], log_dir, env))
    servers.add(Server(
        "starlette",
        [sys.executable, "-m", "uvicorn", "tests.apps.core_starlette:app", "--host", HOST, "--port", "{port}",
         "--lifespan", "off"],
        log_dir, env, probe="/ping",
    ))
    try:
        yield servers
    finally:
        survivors = servers.stop_all()
        leftovers = {name: [p.pid for p in procs] for name, procs in survivors.items() if procs}
        assert not leftovers, f"processes outlived their server: {leftovers}"


@pytest.fixture(scope="session")
def main(core_servers: ServerSet) -> Server:
    return core_servers.get("main")


@pytest.fixture(scope="session")
def starlette_server(core_servers: ServerSet) -> Server:
    server = core_servers.get("starlette")
    if not hasattr(server, "descendants_before_first_request"):
        # Only /ping has been asked so far: a lazily started pool has no process yet.
        server.descendants_before_first_request = [p.pid for p in server.descendants()]  # type: ignore[attr-defined]
    return server


@pytest.fixture()
def client(main: Server):
    with httpx.Client(base_url=main.url, timeout=30) as c:
        yield c


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _latin1(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


def _concurrent_get(base_url: str, paths: list[str], timeout: float = 30) -> list[httpx.Response]:
    def one(path: str) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=timeout) as c:
            return c.get(path)

    with ThreadPoolExecutor(len(paths)) as ex:
        return list(ex.map(one, paths))


def _assert_all_workers_free(server: Server) -> None:
    """As many concurrent requests as workers: each worker must take one."""
    workers = server.worker_pids()
    assert workers, "no worker process found"
    responses = _concurrent_get(server.url, ["/sleep?t=0.4"] * len(workers), timeout=10)
    assert [r.status_code for r in responses] == [200] * len(workers)
    assert {r.json()["pid"] for r in responses} == workers


# ---------------------------------------------------------------- basics


def test_hello(client: httpx.Client) -> None:
    r = client.get("/hello")
    assert r.status_code == 200
    assert r.text == "Hello, world!"
    assert r.headers["content-length"] == "13"
    assert r.headers["content-type"] == "text/plain"


def test_unknown_route_status_and_body_pass_through(client: httpx.Client) -> None:
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.text == "not found"


def test_head_has_headers_and_no_body(client: httpx.Client) -> None:
    r = client.head("/hello")
    assert r.status_code == 200
    assert r.headers["content-length"] == "13"
    assert r.content == b""
    assert client.get("/hello").text == "Hello, world!"  # the connection is still in sync


def test_write_callable(client: httpx.Client) -> None:
    r = client.get("/write")
    assert r.status_code == 200
    assert r.content == b"written;returned"


def test_environ_seen_by_the_app(client: httpx.Client, main: Server) -> None:
    r = client.get(
        "/environ/café/ü",
        params=None,
        headers=[("X-Multi", "a"), ("X-Multi", "b"), ("X-Single", "one")],
    )
    assert r.status_code == 200
    env = r.json()
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == _latin1("/environ/café/ü")
    assert env["QUERY_STRING"] == ""
    assert env["HTTP_X_MULTI"] == "a,b"
    assert env["HTTP_X_SINGLE"] == "one"
    assert env["SERVER_NAME"] == HOST
    assert env["SERVER_PORT"] == str(main.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"].isdigit()
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.multithread"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["pid"] in main.worker_pids()


def test_environ_raw_query_string_and_content_headers(client: httpx.Client) -> None:
    r = client.post(
        "/environ?q=caf%C3%A9&x=1+2&x=%2F",
        content=b"a=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    env = r.json()
    assert env["REQUEST_METHOD"] == "POST"
    assert env["QUERY_STRING"] == "q=caf%C3%A9&x=1+2&x=%2F"
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


# ---------------------------------------------------------------- request bodies


def test_small_upload_stays_in_memory(client: httpx.Client) -> None:
    data = os.urandom(100_000)
    r = client.post("/upload", content=data)
    assert r.status_code == 200
    got = r.json()
    assert got["sha256"] == _sha(data)
    assert got["size"] == len(data)
    assert got["content_length"] == str(len(data))
    assert got["fd_link"] is None  # an in-memory stream, not a file


def test_empty_post(client: httpx.Client) -> None:
    r = client.post("/upload", content=b"")
    assert r.status_code == 200
    got = r.json()
    assert (got["sha256"], got["size"]) == (_sha(b""), 0)


def _assert_spooled_file(got: dict) -> None:
    link = got["fd_link"]
    assert link is not None, "a body above the spool threshold must reach the worker as a file"
    # No name on disk: an unlinked temp file, or an O_TMPFILE that never had one.
    assert link.endswith("(deleted)") or "/#" in link, link
    assert got["fd_mode"] == 0o600


def test_64mib_upload_is_spooled_and_intact(client: httpx.Client) -> None:
    data = os.urandom(64 * MiB)
    r = client.post("/upload", content=data, timeout=120)
    assert r.status_code == 200
    got = r.json()
    assert got["size"] == len(data)
    assert got["sha256"] == _sha(data)
    assert got["content_length"] == str(len(data))
    _assert_spooled_file(got)


def test_chunked_upload_is_intact(client: httpx.Client) -> None:
    pieces = [os.urandom(64 * 1024 + i) for i in range(40)]  # ~2.5 MiB, above the 1 MiB threshold
    data = b"".join(pieces)

    def gen():
        yield from pieces

    r = client.post("/upload", content=gen())
    assert r.status_code == 200
    got = r.json()
    assert got["transfer_encoding"] == "chunked"  # really no Content-Length on the wire
    assert got["sha256"] == _sha(data)
    assert got["size"] == len(data)
    # The body is complete before dispatch, so apps that trust CONTENT_LENGTH see all of it.
    assert got["content_length"] == str(len(data))
    _assert_spooled_file(got)


def test_small_chunked_upload(client: httpx.Client) -> None:
    pieces = [b"abc", b"", b"defgh", b"i" * 1000]

    def gen():
        yield from pieces

    r = client.post("/upload", content=gen())
    assert r.status_code == 200
    got = r.json()
    assert got["transfer_encoding"] == "chunked"
    assert got["sha256"] == _sha(b"".join(pieces))
    assert got["content_length"] == str(len(b"".join(pieces)))
    assert got["fd_link"] is None


def _spool_fds(pid: int) -> list[str]:
    """Links of ``pid``'s descriptors that are nameless temp files (spooled bodies)."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if (link.endswith("(deleted)") or "/#" in link) and not link.startswith("/memfd:a2wsgi_mp-report"):
            links.append(link)  # (not the workers' report files the front holds, see pool/reports.py)
    return links


def test_client_leaving_mid_upload_releases_the_spool(main: Server) -> None:
    assert _spool_fds(main.pid) == []
    for _ in range(3):
        with socket.create_connection((HOST, main.port), timeout=10) as s:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n" + b"a" * (3 * MiB))
            deadline = time.monotonic() + 5
            while not _spool_fds(main.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _spool_fds(main.pid), "3 MiB of a 10 MiB body should be in a spool file by now"
    deadline = time.monotonic() + 5
    while _spool_fds(main.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _spool_fds(main.pid) == [], "the spool file of an abandoned upload stayed open"
    _assert_all_workers_free(main)


def test_max_body_size_declared_length_gets_413(core_servers: ServerSet) -> None:
    server = core_servers.get("limited")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/upload", content=b"x" * (MiB + 1))
        assert r.status_code == 413
        ok = c.post("/upload", content=b"y" * MiB)  # exactly the limit is allowed
        assert ok.status_code == 200
        assert ok.json()["size"] == MiB


def test_max_body_size_chunked_gets_413(core_servers: ServerSet) -> None:
    server = core_servers.get("limited")

    def gen():
        for _ in range(17):  # 17 x 64 KiB = 1.0625 MiB, no Content-Length
            yield b"z" * (64 * 1024)

    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/upload", content=gen())
        assert r.status_code == 413
        assert c.get("/hello").status_code == 200


# ---------------------------------------------------------------- responses


def _expected_sha(size: int) -> str:
    from tests.apps.core_app import download_bytes

    digest = hashlib.sha256()
    for piece in download_bytes(size):
        digest.update(piece)
    return digest.hexdigest()


def test_streamed_download_is_intact(client: httpx.Client) -> None:
    size = 32 * MiB + 12345
    digest = hashlib.sha256()
    received = 0
    with client.stream("GET", f"/download?size={size}") as r:
        assert r.status_code == 200
        assert r.headers["content-length"] == str(size)
        for chunk in r.iter_bytes():
            digest.update(chunk)
            received += len(chunk)
    assert received == size
    assert digest.hexdigest() == _expected_sha(size)


@pytest.mark.parametrize("size", [0, 1000, 5 * MiB + 7])
def test_file_wrapper_response_is_intact(client: httpx.Client, size: int) -> None:
    r = client.get(f"/file?size={size}")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(size)
    assert len(r.content) == size
    assert _sha(r.content) == _expected_sha(size)


def test_slow_reader_does_not_grow_front_memory(main: Server) -> None:
    import psutil

    size = 96 * MiB
    front = psutil.Process(main.pid)
    baseline = front.memory_info().rss
    digest = hashlib.sha256()
    received = 0
    with httpx.Client(base_url=main.url, timeout=30) as c:
        with c.stream("GET", f"/download?size={size}") as r:
            chunks = r.iter_raw(64 * 1024)
            first = next(chunks)
            digest.update(first)
            received += len(first)
            time.sleep(1.0)  # the worker produces far faster than this: back-pressure must hold it
            grown = front.memory_info().rss - baseline
            for chunk in chunks:
                digest.update(chunk)
                received += len(chunk)
    assert grown < 32 * MiB, f"the front buffered {grown / MiB:.1f} MiB for a client that did not read"
    assert received == size
    assert digest.hexdigest() == _expected_sha(size)


def test_streaming_reaches_the_client_as_it_is_made(client: httpx.Client) -> None:
    arrivals: list[float] = []
    data = b""
    with client.stream("GET", "/stream") as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            arrivals.append(time.monotonic())
            data += chunk
    assert data == b"chunk-0;chunk-1;chunk-2;chunk-3;"
    # The app sleeps 0.3 s between its 4 chunks: a buffered response would arrive at once.
    assert arrivals[-1] - arrivals[0] >= 0.6


@pytest.mark.parametrize("query,pause", [
    ("chunks=400&delay=0.05", 0.0),  # a slow producer: the worker sleeps between chunks
    ("chunks=4000&delay=0&size=262144", 0.5),  # 1 GiB as fast as possible: the worker blocks on back-pressure
], ids=["slow-producer", "blocked-on-backpressure"])
def test_client_disconnect_mid_stream_closes_the_iterable(core_servers: ServerSet, main: Server, query: str,
                                                          pause: float) -> None:
    token = uuid.uuid4().hex
    record = core_servers.record_dir / f"closed-{token}"  # type: ignore[attr-defined]
    total = int(query.split("chunks=")[1].split("&")[0])
    with httpx.Client(base_url=main.url, timeout=10) as c:
        with c.stream("GET", f"/slow-stream?token={token}&{query}") as r:
            assert r.status_code == 200
            next(r.iter_raw())
            time.sleep(pause)
        # Leaving the block mid-body closes the connection.
    deadline = time.monotonic() + 10
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert record.exists(), "close() of the streamed iterable was not called after the client left"
    assert int(record.read_text()) < total, "the app streamed to the end instead of being stopped"
    _assert_all_workers_free(main)


def test_error_before_start_is_500_and_worker_survives(client: httpx.Client, main: Server) -> None:
    before = main.worker_pids()
    r = client.get("/error-before")
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    for _ in range(4):
        assert client.get("/hello").status_code == 200
    assert main.worker_pids() == before
    _assert_all_workers_free(main)
    assert main.worker_pids() == before


def test_error_after_start_cuts_the_response(client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/error-after")
    assert client.get("/hello").status_code == 200


@pytest.mark.parametrize("path", ["/short", "/short-list"])
def test_short_content_length_cuts_the_response(client: httpx.Client, path: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(path)
    assert client.get("/hello").status_code == 200


def test_wsgiref_validator_wrapped_app(client: httpx.Client) -> None:
    r = client.get("/validated")
    assert r.status_code == 200, r.text
    assert r.json() == {"sha256": _sha(b""), "size": 0}
    small = b"hello validator"
    r = client.post("/validated", content=small, headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    assert r.json() == {"sha256": _sha(small), "size": len(small)}
    big = os.urandom(2 * MiB)  # spooled: the validator checks the file-backed wsgi.input too
    r = client.post("/validated", content=big, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert r.json() == {"sha256": _sha(big), "size": len(big)}


# ---------------------------------------------------------------- concurrency


def test_threads_serve_concurrently(core_servers: ServerSet) -> None:
    server = core_servers.get("threaded")
    env = httpx.get(server.url + "/environ", timeout=10).json()
    assert env["wsgi.multithread"] is True
    # Each request waits (20 s at most) until all four are running: answered 200 only if they were
    # served at the same time, however slow the machine (a clock here failed on a busy one).
    key = uuid.uuid4().hex
    responses = _concurrent_get(server.url, [f"/together?n=4&key={key}"] * 4, timeout=30)
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert len({r.json()["pid"] for r in responses}) == 1  # one worker process...
    assert len({r.json()["thread"] for r in responses}) == 4  # ...four threads at once


def test_more_concurrent_requests_than_workers_queue_and_succeed(main: Server) -> None:
    responses = _concurrent_get(main.url, [f"/sleep?t=0.1&i={i}" for i in range(10)], timeout=20)
    assert [r.status_code for r in responses] == [200] * 10
    assert {r.json()["pid"] for r in responses} == main.worker_pids()


# ---------------------------------------------------------------- protocols


def _raw_request(port: int, request: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def test_websocket_is_refused_with_403(main: Server) -> None:
    response = _raw_request(main.port, (
        f"GET /ws HTTP/1.1\r\nHost: {HOST}:{main.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode())
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 403"), response[:200]
    assert httpx.get(main.url + "/hello", timeout=10).status_code == 200


def test_websocket_refused_with_websockets_client(main: Server) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as info:
        with connect(f"ws://{HOST}:{main.port}/ws", open_timeout=10):
            pass
    assert info.value.response.status_code == 403


# ---------------------------------------------------------------- mounted in Starlette, no lifespan


def test_starlette_mount_without_lifespan_starts_lazily(starlette_server: Server) -> None:
    assert starlette_server.descendants_before_first_request == []  # type: ignore[attr-defined]
    assert httpx.get(starlette_server.url + "/ping", timeout=10).text == "pong"
    # Several first requests at once: one start-up, all of them served.
    responses = _concurrent_get(starlette_server.url, ["/legacy/hello"] * 6)
    assert [(r.status_code, r.text) for r in responses] == [(200, "Hello, world!")] * 6
    assert len(starlette_server.worker_pids()) == 2
    zygotes = [p for p in starlette_server.descendants() if p.ppid() == starlette_server.pid]
    assert len(zygotes) == 1, "the pool was started more than once"


def test_starlette_mount_environ(starlette_server: Server) -> None:
    with httpx.Client(base_url=starlette_server.url, timeout=30) as c:
        r = c.get("/legacy/environ/naïve/€?a=%20b", headers=[("X-Multi", "1"), ("X-Multi", "2")])
    assert r.status_code == 200
    env = r.json()
    assert env["SCRIPT_NAME"] == "/legacy"
    assert env["PATH_INFO"] == _latin1("/environ/naïve/€")
    assert env["QUERY_STRING"] == "a=%20b"
    assert env["HTTP_X_MULTI"] == "1,2"
    assert env["SERVER_PORT"] == str(starlette_server.port)


def test_starlette_async_route_answers_while_workers_are_busy(core_servers: ServerSet,
                                                              starlette_server: Server) -> None:
    with httpx.Client(base_url=starlette_server.url, timeout=30) as c:
        assert c.get("/legacy/hello").status_code == 200  # the pool is up
    token = uuid.uuid4().hex
    started = [core_servers.record_dir / f"started-{token}{i}" for i in range(2)]  # type: ignore[attr-defined]
    with ThreadPoolExecutor(2) as ex:
        busy = [ex.submit(httpx.get, starlette_server.url + f"/legacy/sleep?t=1.5&started={token}{i}", timeout=10)
                for i in range(2)]
        assert wait_for(lambda: all(p.exists() for p in started), 10), "both workers busy"
        assert not any(f.done() for f in busy)
        pong = httpx.get(starlette_server.url + "/ping", timeout=10)
        assert pong.text == "pong"
        assert not any(f.done() for f in busy), "the async route waited for the WSGI workers"
        assert [f.result().status_code for f in busy] == [200, 200]


# ---------------------------------------------------------------- start method spawn


def test_spawn_start_method_serves_and_stops_cleanly(core_servers: ServerSet) -> None:
    import psutil

    server = core_servers.get("spawn")
    r = httpx.get(server.url + "/pid", timeout=10)
    assert r.status_code == 200
    pid = r.json()["pid"]
    assert server.worker_pids() == {pid}
    # A spawned worker is a fresh interpreter, not a fork of the zygote (its
    # command line is its process title now: a2wsgi-mp: worker 1 [app]).
    assert r.json()["forked"] is False
    assert "worker 1 [" in " ".join(psutil.Process(pid).cmdline())
    big = os.urandom(2 * MiB)  # a spooled body's fd reaches a spawned worker too
    r = httpx.post(server.url + "/upload", content=big, timeout=30)
    assert r.json()["sha256"] == _sha(big)
    survivors = server.stop()
    assert survivors == []
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete: -15 is a clean exit too.
    assert server.proc is not None and server.proc.returncode in (0, -signal.SIGTERM), server.log()[-2000:]
    assert "Finished server process" in server.log()
