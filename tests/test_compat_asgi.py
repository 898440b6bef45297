"""Compatibility matrix, ASGI side: Starlette and FastAPI through ``ASGIMiddleware``
on a WSGI server (gunicorn sync), end to end with httpx.

Cells: ``gunicorn-sync`` and ``gunicorn-gthread`` (a2wsgi_mp's middleware),
and ``a2wsgi-gunicorn-sync`` (a2wsgi 1.10's, the same code with one import
changed — the reference).  The
app (:mod:`tests.apps.compat_asgi`) leaves marker files for what happens in
gunicorn's worker after the response: a background task ran, a disconnect
listener ended, a stream was cancelled when its client left.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from .serverproc import HOST, Server, subprocess_env, wait_for

pytestmark = pytest.mark.timeout(120)

APP = "tests.apps.compat_asgi:application"
#: Two sync workers, so a request one worker is stuck on cannot block the next case;
#: --timeout bounds how long gunicorn lets a stuck worker live.
GUNICORN = [sys.executable, "-m", "gunicorn", "-b", f"{HOST}:{{port}}", "--timeout", "20",
            "--graceful-timeout", "3", "--no-control-socket", APP]
SYNC = [*GUNICORN, "-k", "sync", "-w", "2"]
#: gthread: keep-alive, and requests of one process sharing the middleware's loop at once.
GTHREAD = [*GUNICORN, "-k", "gthread", "-w", "1", "--threads", "4"]
#: cell -> (argv, extra environment)
CELLS = {
    "gunicorn-sync": (SYNC, {}),
    "gunicorn-gthread": (GTHREAD, {}),
    "a2wsgi-gunicorn-sync": (SYNC, {"A2WSGI_IMPL": "a2wsgi"}),
}
#: a2wsgi 1.10's known defects (docs/a2wsgi-migration.md), expected to fail in its reference cell.
A2WSGI_DEFECTS = {
    "test_chunked_upload": "a2wsgi reads the body only up to CONTENT_LENGTH: a chunked upload arrives empty",
    "test_client_leaving_mid_stream_ends_the_app": "a2wsgi does not cancel the app when the client leaves",
}
TIMEOUT = httpx.Timeout(10.0)
MiB = 1024 * 1024


@pytest.fixture(scope="module", params=list(CELLS))
def cell(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("compat-asgi")
    (directory / "served.bin").write_bytes(bytes(range(256)) * 2048)  # 512 KiB
    argv, extra = CELLS[request.param]
    env = subprocess_env(COMPAT_ASGI_DIR=str(directory), **extra)
    server = Server(request.param, argv, log_dir=directory, env=env, probe="/hello")  # log kept for failures
    server.dir = directory  # type: ignore[attr-defined]
    with server:
        yield server
    assert not server.stop(), f"processes outlived the {request.param} server"


@pytest.fixture(autouse=True)
def a2wsgi_defect(request: pytest.FixtureRequest) -> None:
    """The reference cell's known failures are strict xfails: if a2wsgi fixes one, we hear of it."""
    callspec = getattr(request.node, "callspec", None)
    if callspec and callspec.params.get("cell") == "a2wsgi-gunicorn-sync":
        reason = A2WSGI_DEFECTS.get(request.node.originalname)
        if reason:
            request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))


@pytest.fixture()
def client(cell: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cell.url, timeout=TIMEOUT) as c:
        yield c


def marker(cell: Server, name: str) -> Path:
    return cell.dir / name  # type: ignore[attr-defined]


def test_issue10_streaming_response_as_app(client: httpx.Client) -> None:
    # ASGIMiddleware(StreamingResponse(content=map(str, range(10)))): the response
    # object is the whole app, so nothing but the request may call it.
    r = client.get("/issue10")
    assert r.status_code == 200
    assert r.text == "0123456789"


def test_starlette_streaming_response(client: httpx.Client) -> None:
    # Issue 10's example: StreamingResponse(content=map(str, range(10))).
    r = client.get("/stream")
    assert r.status_code == 200
    assert r.text == "0123456789"


def test_starlette_async_stream(client: httpx.Client) -> None:
    r = client.get("/stream-async")
    assert r.status_code == 200
    assert r.content == b"".join((f"{i:05d}" * 200).encode() for i in range(200))


def test_starlette_file_response(client: httpx.Client, cell: Server) -> None:
    r = client.get("/file")
    assert r.status_code == 200
    assert r.content == marker(cell, "served.bin").read_bytes()
    assert r.headers["content-length"] == str(512 * 1024)


def test_starlette_background_task(client: httpx.Client, cell: Server) -> None:
    tag = uuid.uuid4().hex
    r = client.get("/background", params={"tag": tag})
    assert r.status_code == 200 and r.text == "queued"
    assert wait_for(marker(cell, f"background-{tag}").exists, 10), "the background task never ran"


def test_starlette_upload(client: httpx.Client) -> None:
    data = hashlib.shake_256(b"asgi").digest(3 * MiB)
    r = client.put("/upload", content=data)
    assert r.status_code == 200, r.text
    assert r.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_chunked_upload(client: httpx.Client) -> None:
    # No Content-Length: the body arrives chunked (gunicorn sync decodes it).
    parts = [hashlib.shake_256(bytes([i])).digest(100_000) for i in range(5)]
    r = client.put("/upload", content=iter(parts))
    assert r.status_code == 200, r.text
    data = b"".join(parts)
    assert r.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_fastapi_routes(client: httpx.Client, cell: Server) -> None:
    assert client.get("/fastapi/items/7", params={"q": "x"}).json() == {"item_id": 7, "q": "x"}
    assert client.get("/fastapi/items/nope").status_code == 422
    streamed = client.get("/fastapi/stream")
    assert streamed.status_code == 200
    assert streamed.text == "".join(f"event {i}\n" for i in range(50))
    data = b"fastapi" * 100_000
    up = client.put("/fastapi/upload", content=data)
    assert up.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    tag = uuid.uuid4().hex
    assert client.post("/fastapi/background", params={"tag": tag}).json() == {"queued": tag}
    assert wait_for(marker(cell, f"fastapi-background-{tag}").exists, 10), "the background task never ran"


def test_disconnect_listener_ends(client: httpx.Client, cell: Server) -> None:
    # The app waits for http.disconnect in a second task while it streams; once the
    # response is complete receive() must return it, or the app (and worker) hang.
    tag = uuid.uuid4().hex
    r = client.get("/listen/", params={"tag": tag})
    assert r.status_code == 200
    assert r.content == b"".join(b"%09d\n" % i for i in range(10))
    assert wait_for(marker(cell, f"listen-disconnect-{tag}").exists, 10), "the listener never saw http.disconnect"


def test_client_leaving_mid_stream_ends_the_app(cell: Server) -> None:
    tag = uuid.uuid4().hex
    with socket.create_connection((HOST, cell.port), timeout=10) as s:
        s.sendall(f"GET /endless?tag={tag} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    # gunicorn's next write fails and it closes the iterable: the app must be cancelled.
    # (a2wsgi's reference cell is an expected failure: no need to wait long there.)
    bound = 5 if cell.name.startswith("a2wsgi") else 15
    assert wait_for(marker(cell, f"endless-closed-{tag}").exists, bound), \
        f"the stream kept running after the client left:\n{cell.log()[-3000:]}"


def test_server_still_serves(client: httpx.Client) -> None:
    # After every case above, both workers answer (none was left hung).
    for _ in range(4):
        assert client.get("/hello").text == "hello"
