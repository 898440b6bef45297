"""ASGIMiddleware: an ASGI app on a WSGI server (httpx's WSGI transport, and real gunicorn)."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from a2wsgi_mp import ASGIMiddleware
from a2wsgi_mp.asgi import LifespanFailure, build_scope

sys.path.insert(0, str(Path(__file__).parent / "apps"))
from a2wsgi_support import Gunicorn  # noqa: E402


def make_app(events: list[str]) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette):
        events.append("startup")
        yield {"db": "connected"}
        events.append("shutdown")

    async def stream(request: Request) -> StreamingResponse:
        async def chunks():
            for i in range(3):
                yield f"chunk{i}\n".encode()

        return StreamingResponse(chunks(), background=BackgroundTask(events.append, "background"))

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    async def state(request: Request) -> JSONResponse:
        return JSONResponse({"db": request.state.db, "path": request.url.path, "root": request.scope["root_path"]})

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    return Starlette(
        routes=[
            Route("/stream", stream),
            Route("/echo", echo, methods=["POST"]),
            Route("/state", state),
            Route("/boom", boom),
        ],
        lifespan=lifespan,
    )


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def client(events: list[str]) -> Iterator[httpx.Client]:
    middleware = ASGIMiddleware(make_app(events))
    with httpx.Client(transport=httpx.WSGITransport(app=middleware), base_url="http://test", timeout=10) as c:
        yield c
    middleware.close()  # what atexit does


def test_streaming_response_and_background_task(client: httpx.Client, events: list[str]) -> None:
    response = client.get("/stream")
    assert response.status_code == 200
    assert response.text == "chunk0\nchunk1\nchunk2\n"
    # close() waited for the app, so the background task has run by now
    assert events == ["startup", "background"]


def test_lifespan_runs_once_and_state_reaches_requests(client: httpx.Client, events: list[str]) -> None:
    assert client.get("/state").json()["db"] == "connected"
    assert client.get("/state").json()["db"] == "connected"
    assert events == ["startup"]


def test_lifespan_shutdown_at_exit(events: list[str]) -> None:
    middleware = ASGIMiddleware(make_app(events))
    with httpx.Client(transport=httpx.WSGITransport(app=middleware), base_url="http://t", timeout=10) as c:
        c.get("/state")
    middleware.close()
    assert events == ["startup", "shutdown"]


def test_lifespan_off_does_not_run_it(events: list[str]) -> None:
    middleware = ASGIMiddleware(make_app(events), lifespan="off")
    with httpx.Client(transport=httpx.WSGITransport(app=middleware), base_url="http://t", timeout=10) as c:
        assert c.get("/stream").status_code == 200
    assert "startup" not in events


async def no_lifespan_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http", "like Django: http only"
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_app_without_lifespan_support_works_in_auto_mode() -> None:
    middleware = ASGIMiddleware(no_lifespan_app)
    with httpx.Client(transport=httpx.WSGITransport(app=middleware), base_url="http://t", timeout=10) as c:
        assert c.get("/").status_code == 204


def test_lifespan_on_requires_support() -> None:
    middleware = ASGIMiddleware(no_lifespan_app, lifespan="on")
    with pytest.raises(LifespanFailure):
        _ = middleware.loop


def test_invalid_lifespan_mode() -> None:
    with pytest.raises(ValueError):
        ASGIMiddleware(no_lifespan_app, lifespan="yes")  # type: ignore[arg-type]


def test_upload_is_passed_whole(client: httpx.Client) -> None:
    payload = os.urandom(300_000)
    assert client.post("/echo", content=payload).json() == {
        "length": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }


def test_body_is_clamped_to_content_length(events: list[str]) -> None:
    environ = {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/echo", "QUERY_STRING": "",
        "SERVER_NAME": "test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abcdef"), "wsgi.url_scheme": "http",
    }
    statuses: list[str] = []
    response = ASGIMiddleware(make_app(events), lifespan="off")(environ, lambda s, h, e=None: statuses.append(s))
    try:
        body = b"".join(response)
    finally:
        response.close()
    assert statuses == ["200 OK"]
    assert body == b'{"length":3,"sha256":"%s"}' % hashlib.sha256(b"abc").hexdigest().encode()


def test_app_error_before_response_is_a_500(client: httpx.Client) -> None:
    assert client.get("/boom").status_code == 500


def test_build_scope() -> None:
    scope = build_scope(
        {
            "REQUEST_METHOD": "GET", "SCRIPT_NAME": "/mnt", "PATH_INFO": "/caf\xc3\xa9", "QUERY_STRING": "a=1",
            "SERVER_NAME": "example", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "10.0.0.1", "REMOTE_PORT": "5555", "CONTENT_TYPE": "text/plain",
            "HTTP_X_TOKEN": "t", "wsgi.url_scheme": "https",
        }
    )
    assert scope["path"] == "/mnt/café"
    assert scope["root_path"] == "/mnt"
    assert scope["query_string"] == b"a=1"
    assert scope["server"] == ("example", 8080)
    assert scope["client"] == ("10.0.0.1", 5555)
    assert scope["scheme"] == "https"
    assert scope["http_version"] == "1.1"
    assert sorted(scope["headers"]) == [(b"content-type", b"text/plain"), (b"x-token", b"t")]


# -- under a real gunicorn sync server -----------------------------------------


@pytest.fixture(params=[False, True], ids=["fork", "preload"])
def gunicorn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gunicorn]:
    server = Gunicorn("a2wsgi_mp", tmp_path, preload=request.param)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


def wait_for_file(directory: Path, prefix: str, timeout: float = 10.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(directory.glob(prefix + ".*"))
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"no {prefix} marker within {timeout} s")


def test_gunicorn_streams_chunk_by_chunk(gunicorn: Gunicorn) -> None:
    with httpx.Client(timeout=10) as client, client.stream("GET", gunicorn.url + "/stream") as response:
        chunks = response.iter_raw()
        first = next(chunks)
        # The app only sends "second" once this file exists: the first chunk
        # got here while the app was still running, so it was not buffered.
        (gunicorn.marker_dir / "release").touch()
        rest = b"".join(chunks)
    assert (first + rest) == b"first\nsecond\n"
    assert first.startswith(b"first")


def test_gunicorn_background_task_and_lifespan(gunicorn: Gunicorn) -> None:
    response = httpx.get(gunicorn.url + "/background", timeout=10)
    assert response.text == "ok"
    background = wait_for_file(gunicorn.marker_dir, "background")
    state = httpx.get(gunicorn.url + "/state", timeout=10).json()
    worker_pid = state["pid"]
    # startup ran in the worker that serves, and its state reached the request
    assert state["lifespan_pid"] == worker_pid
    assert [p.name for p in wait_for_file(gunicorn.marker_dir, "startup")] == [f"startup.{worker_pid}"]
    assert background[0].name == f"background.{worker_pid}"
    assert gunicorn.terminate() == 0
    assert [p.name for p in wait_for_file(gunicorn.marker_dir, "shutdown")] == [f"shutdown.{worker_pid}"]


def test_gunicorn_chunked_and_sized_uploads(gunicorn: Gunicorn) -> None:
    payload = os.urandom(200_000)
    expected = {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}

    def chunked() -> Iterator[bytes]:
        for i in range(0, len(payload), 7_000):
            yield payload[i : i + 7_000]

    with httpx.Client(timeout=10) as client:
        sized = client.post(gunicorn.url + "/echo", content=payload)
        streamed = client.post(gunicorn.url + "/echo", content=chunked())
    assert sized.json() == expected
    assert streamed.request.headers.get("transfer-encoding") == "chunked"
    assert streamed.json() == expected


def test_failed_lifespan_startup_fails_requests() -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette):
        raise RuntimeError("no database")
        yield

    middleware = ASGIMiddleware(Starlette(lifespan=lifespan))
    with pytest.raises(LifespanFailure):
        middleware({"REQUEST_METHOD": "GET"}, lambda *args: None)


def test_early_close_tells_the_app_the_client_left() -> None:
    import threading

    outcome: dict[str, Any] = {}
    finished = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            raise RuntimeError("http only")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for _ in range(1000):
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
        except OSError as exc:
            outcome["send"] = exc
            outcome["receive"] = await receive()
        finally:
            finished.set()

    environ = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
        "SERVER_NAME": "test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
    }
    response = ASGIMiddleware(app)(environ, lambda *args: None)
    assert next(iter(response)) == b"x"
    response.close()  # what a WSGI server does when the client is gone
    assert finished.wait(5)
    assert isinstance(outcome["send"], OSError)
    assert outcome["receive"] == {"type": "http.disconnect"}


def test_raw_app_ignoring_the_scope_type_is_served_on_gunicorn(tmp_path: Path) -> None:
    """The lifespan probe of ``lifespan="auto"`` waited forever for a startup answer that a raw
    app never gives (it asked ``receive()`` again): every request hung until gunicorn's timeout."""
    from .serverproc import HOST, Server, subprocess_env

    argv = [sys.executable, "-m", "gunicorn", "-b", f"{HOST}:{{port}}", "--no-control-socket", "-w", "1",
            "--timeout", "60", "tests.apps.raw_asgi:app"]
    with Server("raw-asgi", argv, log_dir=tmp_path, env=subprocess_env(), probe="/", ok_only=False) as server:
        payload = os.urandom(100_000)
        response = httpx.post(server.url + "/echo", content=payload, timeout=10)
        assert response.status_code == 200 and response.content == payload


def test_wsgi_input_reads_the_body_of_any_message_that_carries_one() -> None:
    """a2wsgi's ``Body`` test: a body message of a type it does not know is read, not taken as a disconnect;
    only ``http.disconnect`` is the client leaving."""
    import asyncio
    import threading

    from a2wsgi_mp.body import Body, ClientDisconnect

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        messages = [{"type": "http.request.body", "body": b"line one\nline", "more_body": True},
                    {"body": b" two\n", "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        body = Body(loop, receive)
        assert body.readline() == b"line one\n"
        assert body.read() == b"line two\n"
        gone = Body(loop, _returning({"type": "http.disconnect"}))
        with pytest.raises(ClientDisconnect):
            gone.read()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _returning(message: dict[str, Any]) -> Any:
    async def receive() -> dict[str, Any]:
        return message

    return receive
