"""WSGIMiddleware: a WSGI app on an ASGI server (httpx's ASGI transport and raw ASGI calls)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any, Awaitable, Callable

import httpx
import pytest

from a2wsgi_mp import WSGIMiddleware
from a2wsgi_mp.wsgi import Body, ClientDisconnect, ResponseAborted, build_environ

TIMEOUT = 5.0


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))  # type: ignore[arg-type]


async def request(app: Any, method: str = "GET", url: str = "/", raise_app_exceptions: bool = True,
                  **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=WSGIMiddleware(app), raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, url, **kwargs)


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def test_get_and_post() -> None:
    assert run(request(echo_app)).content == b""
    payload = bytes(range(256)) * 1000
    response = run(request(echo_app, "POST", content=payload))
    assert response.status_code == 200
    assert response.content == payload


def test_chunked_upload_streams_through() -> None:
    async def chunks():
        for i in range(20):
            yield b"%05d" % i

    response = run(request(echo_app, "POST", content=chunks()))
    assert response.content == b"".join(b"%05d" % i for i in range(20))


def test_environ_is_a2wsgi_compatible() -> None:
    seen: dict[str, Any] = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("204 No Content", [])
        return []

    response = run(request(app, "GET", "/a%20b?x=1&y=2", headers={"X-Thing": "1", "Cookie": "a=1"}))
    assert response.status_code == 204
    assert seen["REQUEST_METHOD"] == "GET"
    assert seen["PATH_INFO"] == "/a b"
    assert seen["QUERY_STRING"] == "x=1&y=2"
    assert seen["HTTP_X_THING"] == "1"
    assert seen["wsgi.multithread"] is True
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["asgi.scope"]["type"] == "http"
    assert isinstance(seen["wsgi.input"], Body)


def test_build_environ_honours_root_path_and_script_name_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    scope = {"type": "http", "method": "GET", "path": "/mnt/x", "root_path": "/mnt", "query_string": b"",
             "http_version": "1.1", "headers": []}
    environ = build_environ(scope, Body(asyncio.new_event_loop(), None))  # type: ignore[arg-type]
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/mnt", "/x")
    monkeypatch.setenv("SCRIPT_NAME", "/other")
    assert build_environ(scope, environ["wsgi.input"])["SCRIPT_NAME"] == "/other"


def test_write_callable_and_streamed_iterable() -> None:
    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"written,")

        def rest():
            for i in range(50):
                yield b"%d," % i

        return rest()

    response = run(request(app))
    assert response.content == b"written," + b"".join(b"%d," % i for i in range(50))


def test_error_before_start_is_a_500_then_reraised() -> None:
    def app(environ, start_response):
        raise RuntimeError("boom")

    response = run(request(app, raise_app_exceptions=False))
    assert response.status_code == 500 and response.content == b"Internal Server Error"
    with pytest.raises(RuntimeError, match="boom"):  # a2wsgi's behaviour: the server sees the exception
        run(request(app))


def test_error_after_start_cuts_the_response_and_reraises_the_app_error() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"partial"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(request(app))


def test_invalid_header_is_a_500_then_reraised() -> None:
    from a2wsgi_mp.response import InvalidHeader

    def app(environ, start_response):
        start_response("200 OK", [("X-Bad", "a\x01b")])
        return [b"x"]

    assert run(request(app, raise_app_exceptions=False)).status_code == 500
    with pytest.raises(InvalidHeader, match="X-Bad"):
        run(request(app))


def test_starlette_testclient_sees_the_app_exception() -> None:
    from starlette.testclient import TestClient

    def app(environ, start_response):
        raise LookupError("from the WSGI app")

    with pytest.raises(LookupError, match="from the WSGI app"):
        TestClient(WSGIMiddleware(app)).get("/")
    response = TestClient(WSGIMiddleware(app), raise_server_exceptions=False).get("/")
    assert response.status_code == 500


def test_starlette_server_error_middleware_reraises_after_our_500() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    seen: list[BaseException] = []

    def app(environ, start_response):
        raise LookupError("tracked")

    async def tracker(scope, receive, send):  # what an error tracker's ASGI middleware does
        try:
            await WSGIMiddleware(app)(scope, receive, send)
        except Exception as exc:
            seen.append(exc)
            raise

    outer = Starlette(routes=[Mount("/", app=tracker)])
    response = TestClient(outer, raise_server_exceptions=False).get("/x")
    assert response.status_code == 500 and response.text == "Internal Server Error"
    assert len(seen) == 1 and isinstance(seen[0], LookupError)


def test_wsgi_errors_is_stdout_as_in_a2wsgi() -> None:
    seen = {}

    def app(environ, start_response):
        seen["errors"] = environ["wsgi.errors"]
        start_response("204 No Content", [])
        return []

    run(request(app))
    assert seen["errors"] is sys.stdout


def test_exc_info_of_a_handled_error_is_reraised_after_the_error_page() -> None:
    # a2wsgi's behaviour (Bottle passes exc_info with its 500 page): trackers see the error.
    def app(environ, start_response):
        try:
            raise KeyError("handled")
        except KeyError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"custom error page"]

    response = run(request(app, raise_app_exceptions=False))
    assert response.status_code == 500 and response.content == b"custom error page"
    with pytest.raises(KeyError, match="handled"):
        run(request(app))


def test_error_in_close_after_a_good_response_is_reraised() -> None:
    class Body:
        def __iter__(self):
            yield b"ok"

        def close(self):
            raise OSError("close failed")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return Body()

    response = run(request(app, raise_app_exceptions=False))
    assert response.status_code == 200 and response.content == b"ok"
    with pytest.raises(OSError, match="close failed"):
        run(request(app))


def test_short_content_length_cuts_the_response() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "100")])
        yield b"only"
        yield b"this"

    with pytest.raises(ResponseAborted):
        run(request(app))


def test_lifespan_and_websocket_scopes() -> None:
    middleware = WSGIMiddleware(echo_app)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}, {"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive():
        return inbox.pop(0)

    async def send(message):
        sent.append(message)

    run(middleware({"type": "lifespan"}, receive, send))
    run(middleware({"type": "websocket"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete", "websocket.close"]


def test_send_queue_bounds_how_far_the_thread_runs_ahead() -> None:
    produced = 0
    sent = 0
    lead: list[int] = []

    def app(environ, start_response):
        nonlocal produced
        start_response("200 OK", [])
        for _ in range(200):
            produced += 1
            lead.append(produced - sent)
            yield b"x"

    async def receive():
        await asyncio.sleep(TIMEOUT * 2)
        return {"type": "http.disconnect"}

    async def send(message):
        nonlocal sent
        await asyncio.sleep(0.0005)  # a slow client
        if message.get("body"):
            sent += 1

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": [], "http_version": "1.1"}
    run(WSGIMiddleware(app, send_queue_size=4)(scope, receive, send))
    assert sent == 200
    # at most send_queue_size queued, one being sent and one being produced
    assert max(lead) <= 4 + 2


def test_cancelled_request_releases_the_thread() -> None:
    closed = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [])

        def chunks():
            try:
                for _ in range(100_000):
                    yield b"x" * 100
            finally:
                closed.set()

        return chunks()

    async def main() -> None:
        started = asyncio.Event()

        async def receive():
            await asyncio.sleep(TIMEOUT * 2)
            return {"type": "http.disconnect"}

        async def send(message):
            started.set()
            await asyncio.Event().wait()  # a client that never reads again

        scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": [],
                 "http_version": "1.1"}
        task = asyncio.ensure_future(WSGIMiddleware(app, send_queue_size=2)(scope, receive, send))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert closed.wait(TIMEOUT), "the worker thread is still stuck in the response"


# -- Body ----------------------------------------------------------------------


def body_from(messages: list[dict[str, Any]]) -> tuple[Body, list[int], asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    calls = [0]

    async def receive():
        calls[0] += 1
        return messages.pop(0)

    return Body(loop, receive), calls, loop, thread


def stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(TIMEOUT)
    loop.close()


def test_body_reads_lazily_and_line_by_line() -> None:
    body, calls, loop, thread = body_from(
        [
            {"type": "http.request", "body": b"line one\nli", "more_body": True},
            {"type": "http.request", "body": b"ne two\nrest", "more_body": True},
            {"type": "http.request", "body": b"", "more_body": False},
        ]
    )
    try:
        assert calls[0] == 0
        assert body.readline() == b"line one\n"
        assert calls[0] == 1
        assert body.read(3) == b"lin"
        assert body.readline(2) == b"e "
        assert list(body) == [b"two\n", b"rest"]
        assert body.read() == b""
        assert body.readline() == b""
        assert calls[0] == 3  # never calls receive() after the last body message
    finally:
        stop(loop, thread)


def test_body_readlines_hint() -> None:
    body, _, loop, thread = body_from([{"type": "http.request", "body": b"a\nb\nc\n", "more_body": False}])
    try:
        assert body.readlines(1) == [b"a\n"]
        assert body.readlines() == [b"b\n", b"c\n"]
    finally:
        stop(loop, thread)


def test_body_disconnect_raises_every_time() -> None:
    body, _, loop, thread = body_from([{"type": "http.request", "body": b"abc", "more_body": True},
                                       {"type": "http.disconnect"}])
    try:
        with pytest.raises(ClientDisconnect):
            body.read()
        with pytest.raises(ClientDisconnect):
            body.read(1)
    finally:
        stop(loop, thread)


@pytest.mark.parametrize("declared", [b"0", b"6"], ids=["no-body", "unread-body"])
def test_disconnect_while_streaming_stops_the_app(declared: bytes) -> None:
    """Also when the app never reads the upload: the body is read ahead to see the disconnect."""
    closed = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [])

        def chunks():
            try:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    yield b"x"
                    time.sleep(0.001)
            finally:
                closed.set()

        return chunks()

    async def main() -> None:
        gone = asyncio.Event()
        inbox = [
            {"type": "http.request", "body": b"abc", "more_body": True},
            {"type": "http.request", "body": b"def", "more_body": False},
        ]
        if declared == b"0":
            inbox = [{"type": "http.request", "body": b"", "more_body": False}]
        sent = 0

        async def receive():
            if inbox:
                return inbox.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            nonlocal sent
            sent += 1
            if sent == 5:
                gone.set()

        scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "http_version": "1.1",
                 "headers": [(b"content-length", declared)]}
        await WSGIMiddleware(app)(scope, receive, send)

    run(main())
    assert closed.wait(TIMEOUT)
