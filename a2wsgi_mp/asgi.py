"""An ASGI app on a WSGI server: a drop-in for a2wsgi's ``ASGIMiddleware``.

The ASGI app runs on an event loop in a background thread; each WSGI request
thread drives one ASGI request through a command queue.  Unlike a2wsgi:

* the loop thread starts lazily, in the process that serves, at the first
  request (and again in a forked child), so pre-fork servers (gunicorn
  ``--preload``, uWSGI, Passenger) do not inherit a loop without its thread
  and hang (a2wsgi #34, #81);
* chunked uploads work: with ``wsgi.input_terminated`` and no
  ``CONTENT_LENGTH`` the body is read to EOF; otherwise it is clamped to
  ``CONTENT_LENGTH`` and a short body is reported as ``http.disconnect``;
* the app's lifespan runs (``lifespan="auto"``): startup before the first
  request, shutdown at process exit, its ``state`` copied into every request;
* background work after the response (Starlette ``BackgroundTask``) is awaited
  in the iterable's ``close()``, after the server has finished the response,
  so a streamed response is not held open for it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import threading
import weakref
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Iterator, Literal, MutableMapping

from .environ import Environ
from .lifespan import LifespanFailure, Lifespan

__all__ = ["ASGIMiddleware", "LifespanFailure", "build_scope"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]
StartResponse = Callable[..., Any]

logger = logging.getLogger("a2wsgi_mp.asgi")

#: How much of the request body one ``http.request`` message carries at most.
CHUNK_SIZE = 64 * 1024
_DISCONNECT: Message = {"type": "http.disconnect"}
_ERROR_BODY = b"Internal Server Error"


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown Status Code"


def build_scope(environ: Environ) -> Scope:
    """An ASGI HTTP scope for ``environ`` (a2wsgi's, plus ``state``)."""
    headers = [
        (
            (key[5:] if key.startswith("HTTP_") else key).lower().replace("_", "-").encode("latin-1"),
            value.encode("latin-1"),
        )
        for key, value in environ.items()
        if (key.startswith("HTTP_") and key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"))
        or key in ("CONTENT_TYPE", "CONTENT_LENGTH")
    ]
    root_path = environ.get("SCRIPT_NAME", "").encode("latin-1").decode("utf-8", "replace")
    path = root_path + environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
    scope: Scope = {
        "wsgi_environ": environ,
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.5"},
        "http_version": environ.get("SERVER_PROTOCOL", "HTTP/1.0").partition("/")[2] or "1.0",
        "method": environ["REQUEST_METHOD"],
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "path": path,
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": root_path,
        "server": (environ.get("SERVER_NAME", "localhost"), int(environ.get("SERVER_PORT") or 80)),
        "headers": headers,
        "extensions": {},
        "state": {},
    }
    if environ.get("REMOTE_ADDR") and environ.get("REMOTE_PORT"):
        scope["client"] = (environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"]))
    return scope


class ASGIMiddleware:
    """Convert an ASGI app into a WSGI app.

    ``wait_time``: after the response ends, how long (seconds, ``None`` = no
    limit) to wait for the app to finish (background tasks) before cancelling it.
    ``loop``: run on this already-running loop instead of a private one.
    ``lifespan``: ``"auto"`` runs the app's lifespan if it supports it,
    ``"on"`` requires it, ``"off"`` never runs it (a2wsgi's behaviour).
    Startup runs before the first request of each process, shutdown at exit.
    """

    #: Seconds the at-exit lifespan shutdown may take.
    shutdown_timeout = 10.0

    def __init__(
        self,
        app: ASGIApp,
        wait_time: float | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        lifespan: Literal["auto", "on", "off"] = "auto",
    ) -> None:
        if lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be 'auto', 'on' or 'off', not {lifespan!r}")
        self.app = app
        self.wait_time = wait_time
        self.lifespan = lifespan
        self.state: dict[str, Any] = {}
        self._loop = loop
        self._given_loop = loop is not None
        self._pid: int | None = None
        self._failure: BaseException | None = None
        self._lifespan: Lifespan | None = None
        self._lock = threading.Lock()
        ref = weakref.ref(self)

        def after_fork_in_child() -> None:  # a lock held by a parent thread stays held
            self_ = ref()
            if self_ is not None:
                self_._lock = threading.Lock()

        os.register_at_fork(after_in_child=after_fork_in_child)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the app runs on, started (with lifespan) on first use in this process."""
        if self._pid != os.getpid():
            self._start()
        if self._failure is not None:
            raise LifespanFailure(str(self._failure)) from self._failure
        assert self._loop is not None
        return self._loop

    def _start(self) -> None:
        with self._lock:
            pid = os.getpid()
            if self._pid == pid:
                return
            if not self._given_loop or self._pid is not None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="a2wsgi_mp-asgi", daemon=True)
                thread.start()
                self._loop = loop
            assert self._loop is not None
            self.state = {}
            self._failure = None
            self._lifespan = Lifespan(self.app, self.state, required=self.lifespan == "on")
            if self.lifespan != "off":
                try:
                    asyncio.run_coroutine_threadsafe(self._lifespan.startup(), self._loop).result()
                except Exception as exc:
                    logger.error("ASGI lifespan startup failed", exc_info=exc)
                    self._failure = exc
            atexit.register(self._at_exit, pid)
            self._pid = pid

    def _at_exit(self, pid: int) -> None:
        if os.getpid() == pid == self._pid:  # atexit handlers survive fork: not in children
            self.close()

    def close(self) -> None:
        """Run the lifespan shutdown and stop the private loop; also done at exit.

        Idempotent; a later request starts everything afresh.
        """
        with self._lock:
            loop, self._pid = self._loop, None
            if loop is None or not loop.is_running():
                return
            if self._lifespan is not None and self._lifespan.supported:
                try:
                    asyncio.run_coroutine_threadsafe(self._lifespan.shutdown(), loop).result(self.shutdown_timeout)
                except Exception as exc:
                    logger.error("ASGI lifespan shutdown did not complete", exc_info=exc)
            if not self._given_loop:
                loop.call_soon_threadsafe(loop.stop)

    def __call__(self, environ: Environ, start_response: StartResponse) -> "_Response":
        loop = self.loop
        scope = build_scope(environ)
        scope["state"] = dict(self.state)
        return _Response(self.app, loop, self.wait_time, scope, environ, start_response)


class _Response:
    """The WSGI iterable of one request, and the ASGI ``receive``/``send`` it serves.

    The loop never blocks on the WSGI server: ``receive``/``send`` post a
    command and await a future that this thread resolves.  ``close()`` (which
    every WSGI server calls) tells the app the client is gone, or, after a
    complete response, waits ``wait_time`` for its background work.
    """

    def __init__(
        self,
        app: ASGIApp,
        loop: asyncio.AbstractEventLoop,
        wait_time: float | None,
        scope: Scope,
        environ: Environ,
        start_response: StartResponse,
    ) -> None:
        self.loop = loop
        self.wait_time = wait_time
        self.commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.task_done = threading.Event()
        self.complete = False
        self._app, self._scope = app, scope
        self._input = environ.get("wsgi.input")
        length = environ.get("CONTENT_LENGTH") or ""
        if length.strip().isdigit():
            self._remaining: int | None = int(length)
        else:
            self._remaining = None if environ.get("wsgi.input_terminated") else 0
        self._iterator = self._run(start_response)
        # Loop-side state: touched only on the loop thread.
        self._pending: dict[asyncio.Future[Any], str] = {}
        self._closed = False
        self._sent_last = False
        self._body_done = False
        self._finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        loop.call_soon_threadsafe(self._start_task)

    def __iter__(self) -> Iterator[bytes]:
        return self._iterator

    def close(self) -> None:
        self._iterator.close()
        self._call_on_loop(self._close_on_loop)  # also when the server never iterated
        if self.complete and not self.task_done.wait(self.wait_time):
            self.loop.call_soon_threadsafe(self._cancel_task)

    # -- WSGI thread ----------------------------------------------------------

    def _run(self, start_response: StartResponse) -> Iterator[bytes]:
        started = False
        try:
            while True:
                command = self.commands.get()
                kind = command[0]
                if kind == "receive":
                    self._reply(command[1], self._read_body())
                elif kind == "done":
                    exc = command[1]
                    if not started:
                        logger.error("ASGI app returned without a response", exc_info=exc)
                        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
                        start_response(
                            "500 Internal Server Error",
                            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(_ERROR_BODY)))],
                            exc_info,
                        )
                        yield _ERROR_BODY
                    elif exc is not None:
                        raise exc  # the response started: let the server cut it
                    return
                else:
                    message, future = command[1], command[2]
                    if message["type"] == "http.response.start":
                        if started:
                            self._fail(future, RuntimeError("http.response.start sent twice"))
                            continue
                        headers = [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in message.get("headers", ())]
                        start_response(_status_line(message["status"]), headers)
                        started = True
                    elif message["type"] == "http.response.body":
                        if not started:
                            self._fail(future, RuntimeError("http.response.body sent before http.response.start"))
                            continue
                        chunk = message.get("body", b"")
                        if chunk:
                            yield bytes(chunk)
                        if not message.get("more_body", False):
                            self.complete = True
                            self._reply(future, None)
                            return
                    else:
                        self._fail(future, RuntimeError(f"unsupported ASGI message {message['type']!r}"))
                        continue
                    self._reply(future, None)
        finally:
            self._call_on_loop(self._close_on_loop)

    def _read_body(self) -> Message:
        if self._remaining == 0 or self._input is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        size = CHUNK_SIZE if self._remaining is None else min(CHUNK_SIZE, self._remaining)
        try:
            data = self._input.read(size)
        except OSError:
            return _DISCONNECT
        if self._remaining is None:
            return {"type": "http.request", "body": data, "more_body": bool(data)}
        if not data:  # shorter than its Content-Length: truncated, not complete
            return _DISCONNECT
        self._remaining -= len(data)
        return {"type": "http.request", "body": data, "more_body": self._remaining > 0}

    def _reply(self, future: asyncio.Future[Any], result: Any) -> None:
        self._call_on_loop(lambda: future.done() or future.set_result(result))

    def _fail(self, future: asyncio.Future[Any], exc: BaseException) -> None:
        self._call_on_loop(lambda: future.done() or future.set_exception(exc))

    def _call_on_loop(self, callback: Callable[[], Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(callback)
        except RuntimeError:  # loop closed at interpreter exit: nobody is waiting
            pass

    # -- event loop -----------------------------------------------------------

    def _start_task(self) -> None:
        self._task = self.loop.create_task(self._app(self._scope, self.receive, self.send))  # type: ignore[arg-type]
        self._task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        self.task_done.set()
        if self._closed or self._sent_last:
            if exc is not None and not isinstance(exc, OSError):
                logger.error("Exception in ASGI application after the response", exc_info=exc)
        self.commands.put(("done", exc))  # unread if the response is already over

    def _cancel_task(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _close_on_loop(self) -> None:
        self._closed = True
        self._finished.set()
        for future, kind in self._pending.items():
            if not future.done():
                if kind == "receive":
                    future.set_result(_DISCONNECT)
                else:
                    future.set_exception(OSError("the client disconnected"))

    async def _call_thread(self, kind: str, *args: Any) -> Any:
        future = self.loop.create_future()
        self._pending[future] = kind
        self.commands.put((kind, *args, future))
        try:
            return await future
        finally:
            del self._pending[future]

    async def receive(self) -> Message:
        if self._closed:
            return _DISCONNECT
        if self._body_done:
            await self._finished.wait()  # a disconnect here is the end of the response
            return _DISCONNECT
        message = await self._call_thread("receive")
        if message["type"] != "http.request" or not message.get("more_body"):
            self._body_done = True
        return message

    async def send(self, message: Message) -> None:
        if self._sent_last:
            raise RuntimeError(f"{message['type']!r} sent after the response completed")
        if self._closed:
            raise OSError("the client disconnected")
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._sent_last = True
        await self._call_thread("send", message)
