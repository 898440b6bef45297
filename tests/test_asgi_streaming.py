"""ASGIMiddleware streaming and disconnect semantics (issue 10, item 2).

The apps are in ``apps/asgi_stream_app.py``; they are served in-process through
``httpx.WSGITransport`` and by two real WSGI servers (gunicorn sync, wsgiref),
each started once for the module.  Clients leaving mid-stream are raw sockets
that reset the connection, against gunicorn.
"""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from a2wsgi_mp import ASGIMiddleware

from .serverproc import HOST, Server, ServerSet, subprocess_env, wait_for

APPS = Path(__file__).resolve().parent / "apps"
sys.path.insert(0, str(APPS))
import asgi_stream_app  # noqa: E402

SERVERS = ["httpx", "gunicorn", "wsgiref"]
TIMEOUT = 15.0


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, module_servers: ServerSet) -> dict[str, Server]:
    log_dir = tmp_path_factory.mktemp("asgi-stream")
    gunicorn = Server(
        "gunicorn",
        [
            sys.executable, "-m", "gunicorn", "--bind", f"{HOST}:{{port}}", "--workers", "1",
            "--worker-class", "sync", "--timeout", "60", "--graceful-timeout", "5",
            "--pythonpath", str(APPS), "asgi_stream_app:application",
        ],
        log_dir=log_dir, env=subprocess_env(), probe="/pid",
    )
    wsgiref = Server("wsgiref", [sys.executable, str(APPS / "asgi_stream_app.py"), "{port}"],
                     log_dir=log_dir, env=subprocess_env(), probe="/pid")
    for server in (gunicorn, wsgiref):
        module_servers.add(server)
    return {name: module_servers.get(name) for name in ("gunicorn", "wsgiref")}


@pytest.fixture(scope="module")
def clients(servers: dict[str, Server]) -> Iterator[dict[str, httpx.Client]]:
    made = {
        "httpx": httpx.Client(transport=httpx.WSGITransport(app=asgi_stream_app.make_application()),
                              base_url="http://test", timeout=TIMEOUT),
        **{name: httpx.Client(base_url=server.url, timeout=TIMEOUT) for name, server in servers.items()},
    }
    yield made
    for client in made.values():
        client.close()


def events_of(client: httpx.Client) -> list[str]:
    return client.get("/events").json()


def wait_for_event(client: httpx.Client, event: str, timeout: float = TIMEOUT) -> list[str]:
    events = wait_for(lambda: (lambda e: e if event in e else None)(events_of(client)), timeout, 0.05)
    assert events, f"{event!r} not recorded within {timeout} s: {events_of(client)}"
    return events


@pytest.mark.parametrize("server", SERVERS)
def test_bare_responses_as_the_whole_app(clients: dict[str, httpx.Client], server: str) -> None:
    """A response object as the app: its body arrives whole and its background task runs once.

    The lifespan probe used to run them as if the ``lifespan`` scope were a
    request: it spent the StreamingResponse's iterator (empty body) and ran the
    background task an extra time.
    """
    client = clients[server]
    assert client.get("/oneshot").text == "0123456789"
    assert client.get("/legacy-oneshot").text == "0123456789"
    assert client.get("/background").text == "ok"
    payload = asgi_stream_app.file_payload()
    for name in ("file", "legacy-file"):
        response = client.get("/" + name)
        assert response.status_code == 200 and response.content == payload, name
    for event in ("background", "file:background", "legacy-file:background"):
        assert wait_for_event(client, event).count(event) == 1, event


@pytest.mark.parametrize("server", SERVERS)
def test_listen_for_disconnect_ends_once_the_response_is_complete(clients: dict[str, httpx.Client],
                                                                  server: str) -> None:
    """A raw app streaming while a second task waits for ``http.disconnect``: neither hangs."""
    client = clients[server]
    assert client.get("/listener").text == "01234"
    events = wait_for_event(client, "listener:complete")
    assert "listener:disconnect" in events


@pytest.mark.parametrize("server", SERVERS)
def test_fastapi_endpoints(clients: dict[str, httpx.Client], server: str) -> None:
    """Sync and async endpoints and StreamingResponse, on both of Starlette's spec paths."""
    client = clients[server]
    for prefix in ("/fastapi", "/legacy-fastapi"):
        assert client.get(prefix + "/sync").json() == {"kind": "sync", "thread": True}
        assert client.get(prefix + "/async").json() == {"kind": "async"}
        assert client.get(prefix + "/stream").text == "".join(f"a{i}\n" for i in range(5))
        assert client.get(prefix + "/sync-stream").text == "".join(f"s{i}\n" for i in range(5))
        assert wait_for_event(client, f"{prefix}/stream:background").count(f"{prefix}/stream:background") == 1


def leave_mid_stream(url: str, path: str, min_bytes: int = 128 * 1024) -> None:
    """GET ``path``, read part of the streamed body, then reset the connection."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        received = 0
        while received < min_bytes:
            data = sock.recv(65536)
            assert data, f"{path}: the server closed the connection after {received} bytes"
            received += len(data)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST


@pytest.mark.parametrize(
    ("path", "seen"),
    [
        ("/fastapi/endless", "/fastapi/endless:ended"),
        ("/legacy-fastapi/endless", "/legacy-fastapi/endless:ended"),
        ("/fastapi/endless-sync", "/fastapi/endless-sync:ended"),
        ("/listener?endless", "listener:disconnect"),
        ("/file", None),
        ("/legacy-file", None),
    ],
)
def test_client_leaving_mid_stream_stops_the_app(
    servers: dict[str, Server], clients: dict[str, httpx.Client], path: str, seen: str | None
) -> None:
    """Under gunicorn sync: the app learns the client left and ends, quietly; the worker goes on."""
    server, client = servers["gunicorn"], clients["gunicorn"]
    worker = client.get("/pid").json()
    log_before = len(server.log())
    leave_mid_stream(server.url, path)
    if seen is not None:
        wait_for_event(client, seen)
    assert client.get("/pid").json() == worker  # the same worker serves the next request
    assert client.get("/fastapi/async").json() == {"kind": "async"}  # and it is not stuck
    log = server.log()[log_before:]
    assert "Traceback" not in log and "Exception in ASGI" not in log, log


# -- the bridge, driven directly as a WSGI server would ------------------------


def environ(body: bytes = b"", **extra: Any) -> dict[str, Any]:
    env = {
        "REQUEST_METHOD": "POST" if body else "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
        "SERVER_NAME": "test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)) if body else "",
    }
    env.update(extra)
    return env


def call(app: Callable[..., Any], env: dict[str, Any], **options: Any) -> tuple[Any, list[str]]:
    middleware = ASGIMiddleware(app, lifespan="off")
    for name, value in options.items():
        setattr(middleware, name, value)
    statuses: list[str] = []
    return middleware(env, lambda status, headers, exc_info=None: statuses.append(status)), statuses


def test_response_complete_when_the_server_stops_after_the_last_bytes() -> None:
    """A server may stop iterating once it has the final chunk (Content-Length reached): the
    final ``send`` still succeeds, and ``receive()`` says ``http.disconnect`` from then on
    (ASGI spec: "if receive is called after a response has been sent")."""
    seen: list[Any] = []
    finished = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
            await send({"type": "http.response.body", "body": b"done"})
            seen.append("sent")
            seen.append((await asyncio.wait_for(receive(), 5))["type"])
            seen.append((await asyncio.wait_for(receive(), 5))["type"])
        except BaseException as exc:
            seen.append(repr(exc))
        finally:
            finished.set()

    response, statuses = call(app, environ())
    assert next(iter(response)) == b"done"
    response.close()  # without asking for more
    assert finished.wait(TIMEOUT)
    assert statuses == ["200 OK"]
    assert seen == ["sent", "http.disconnect", "http.disconnect"]


def test_a_cancelled_receive_loses_no_body() -> None:
    """A ``receive()`` cancelled while its chunk is being read (``wait_for`` timing out, an anyio
    cancel scope) must leave that chunk for the next call, not drop it."""
    payload = bytes(range(256)) * 1024  # 4 chunks
    received = bytearray()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        early = asyncio.ensure_future(receive())
        await asyncio.sleep(0)  # the read is under way
        early.cancel()
        while True:
            message = await receive()
            received.extend(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(received)})

    response, _ = call(app, environ(payload))
    try:
        assert b"".join(response) == b"%d" % len(payload)
    finally:
        response.close()
    assert bytes(received) == payload


def test_app_returning_mid_response_cuts_the_connection() -> None:
    """Returning before ``more_body=False`` is not a complete response: the server must see an error
    (and drop the connection) rather than end the body as if it were whole."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    response, _ = call(app, environ())
    chunks = iter(response)
    assert next(chunks) == b"partial"
    with pytest.raises(RuntimeError, match="without completing"):
        next(chunks)
    response.close()


def test_server_closing_cancels_an_idle_app() -> None:
    """The server gives up on the response (a timeout, a shutdown) while the app awaits something
    other than ``receive``/``send``: it is cancelled at once."""
    outcome: list[str] = []
    running, finished = threading.Event(), threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        running.set()
        try:
            await asyncio.sleep(60)
        except BaseException as exc:
            outcome.append(type(exc).__name__)
        finally:
            finished.set()

    response, statuses = call(app, environ())
    assert running.wait(TIMEOUT)
    started = time.monotonic()
    response.close()
    assert finished.wait(TIMEOUT)
    assert outcome == ["CancelledError"] and statuses == []
    assert time.monotonic() - started < 5


def test_app_ignoring_the_disconnect_is_cancelled_after_the_grace() -> None:
    outcome: list[str] = []
    finished = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while True:
                try:
                    await send({"type": "http.response.body", "body": b"x", "more_body": True})
                except OSError as exc:
                    outcome.append(type(exc).__name__)
                    await asyncio.sleep(60)  # carries on regardless
        except BaseException as exc:
            outcome.append(type(exc).__name__)
        finally:
            finished.set()

    response, _ = call(app, environ(), disconnect_grace=0.2)
    assert next(iter(response)) == b"x"
    response.close()
    assert finished.wait(TIMEOUT)
    assert outcome == ["SendDisconnected", "CancelledError"]
