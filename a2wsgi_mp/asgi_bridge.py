"""One request of an ASGI app on a WSGI server: the WSGI iterable and the ASGI ``receive``/``send``.

Two threads meet here.  The WSGI server's thread iterates the response and
calls ``close()``; the event loop thread runs the app.  The loop never blocks on
the WSGI server: ``receive``/``send`` post a command to a queue and await a
future that the WSGI thread resolves while it iterates.

Disconnect semantics follow the ASGI HTTP spec (2.4+):

* once the response is complete, or the server has closed the iterable,
  ``receive()`` returns ``http.disconnect`` (so "listen for disconnect" tasks,
  like Starlette's streaming responses on spec < 2.4, end);
* once the server has closed the iterable of an incomplete response (it does
  so when a write to the client failed), ``send()`` raises
  :class:`~a2wsgi_mp.errors.SendDisconnected`, an ``OSError``;
* the app then has ``disconnect_grace`` seconds to finish before its task is
  cancelled (at once if it is not waiting on ``receive``/``send``), so an app
  whose client left never runs on unseen.

A WSGI server only notices a client that left when it writes to it, so an app
that is silent for a while learns of the disconnect at its next ``send()``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
from http import HTTPStatus
from typing import Any, Callable, Generator, Iterator, MutableMapping

from .errors import SendDisconnected
from .replies import plain_headers
from .types import ASGIApp, Message, Scope, StartResponse

logger = logging.getLogger("a2wsgi_mp.asgi")

#: How much of the request body one ``http.request`` message carries at most.
CHUNK_SIZE = 64 * 1024
_DISCONNECT: Message = {"type": "http.disconnect"}
_ERROR_BODY = b"Internal Server Error"
_GONE = object()  # what a pending send() is resolved with when the client is gone


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown Status Code"


def _caused_by_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` is the app giving up because the client left (not worth an error log)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, OSError):
            return True
        current, seen = current.__cause__ or current.__context__, seen + 1
    return False


class RequestBridge:
    """The WSGI iterable of one request, and the ASGI ``receive``/``send`` it serves.

    ``close()`` (which every WSGI server calls) after a complete response waits
    up to ``wait_time`` for the app's remaining work (background tasks) before
    cancelling it; before the response is complete it tells the app the client
    is gone and does not wait.
    """

    def __init__(
        self,
        app: ASGIApp,
        loop: asyncio.AbstractEventLoop,
        scope: Scope,
        environ: MutableMapping[str, Any],
        start_response: StartResponse,
        wait_time: float | None,
        disconnect_grace: float,
    ) -> None:
        self.loop = loop
        self.wait_time = wait_time
        self.disconnect_grace = disconnect_grace
        self.commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.task_done = threading.Event()
        self.complete = False  # WSGI thread: the final body message was accepted
        self._app, self._scope = app, scope
        self._input = environ.get("wsgi.input")
        length = environ.get("CONTENT_LENGTH") or ""
        if length.strip().isdigit():
            self._remaining: int | None = int(length)
        else:
            self._remaining = None if environ.get("wsgi.input_terminated") else 0
        self._iterator = self._run(start_response)
        # Loop-side state: touched only on the loop thread.
        self._read: asyncio.Future[Message] | None = None  # a body read in flight
        self._sends: set[asyncio.Future[Any]] = set()
        self._waiting = 0  # app calls blocked in receive()/send()
        self._body_done = False
        self._sent_last = False
        self._closed = False  # ended before the response was complete
        self._ended = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        loop.call_soon_threadsafe(self._start_task)

    def __iter__(self) -> Iterator[bytes]:
        return self._iterator

    def close(self) -> None:
        self._iterator.close()
        self._call_on_loop(functools.partial(self._end, not self.complete))  # also if never iterated
        if self.complete and not self.task_done.wait(self.wait_time):
            self._call_on_loop(self._cancel_task)

    # -- WSGI thread ----------------------------------------------------------

    def _run(self, start_response: StartResponse) -> Generator[bytes, None, None]:
        started = False
        try:
            while True:
                command = self.commands.get()
                kind = command[0]
                if kind == "receive":
                    self._resolve(command[1], self._read_body())
                    continue
                if kind == "done":
                    exc = command[1]
                    if not started:
                        logger.error("ASGI app returned without a response", exc_info=exc)
                        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
                        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in plain_headers(_ERROR_BODY)]
                        start_response("500 Internal Server Error", headers, exc_info)
                        yield _ERROR_BODY
                        return
                    # The response started and cannot become a 500: have the
                    # server cut the connection so the client sees it truncated.
                    if isinstance(exc, Exception):
                        raise exc
                    raise RuntimeError("ASGI app returned without completing the response") from exc
                message, future = command[1], command[2]
                kind = message["type"]
                if kind == "http.response.start":
                    if started:
                        self._fail(future, RuntimeError("http.response.start sent twice"))
                        continue
                    headers = [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                               for k, v in message.get("headers", ())]
                    start_response(status_line(message["status"]), headers)
                    started = True
                    self._resolve(future, None)
                elif kind == "http.response.body":
                    if not started:
                        self._fail(future, RuntimeError("http.response.body sent before http.response.start"))
                        continue
                    chunk = bytes(message.get("body", b""))
                    if not message.get("more_body", False):
                        # Complete once handed over, even if the server stops
                        # iterating after the last bytes (Content-Length reached).
                        self.complete = True
                        self._resolve(future, None)
                        if chunk:
                            yield chunk
                        return
                    if chunk:
                        yield chunk  # resumed once the server has written it: flow control
                    self._resolve(future, None)
                else:
                    self._fail(future, RuntimeError(f"unsupported ASGI message {kind!r}"))
        finally:
            self._call_on_loop(functools.partial(self._end, not self.complete))

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

    def _resolve(self, future: asyncio.Future[Any], result: Any) -> None:
        def resolve() -> None:
            if not future.done():
                future.set_result(result)

        self._call_on_loop(resolve)

    def _fail(self, future: asyncio.Future[Any], exc: BaseException) -> None:
        def fail() -> None:
            if not future.done():
                future.set_exception(exc)

        self._call_on_loop(fail)

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
        exc: BaseException | None = asyncio.CancelledError() if task.cancelled() else task.exception()
        # Drop what ties this bridge to the app's frames (through the exception's
        # traceback), so the app's objects are freed, and its generators
        # finalized (their ``finally`` run), by refcount rather than a later GC.
        self._task = None
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self.task_done.set()
        if not self._ended.is_set():
            self.commands.put(("done", exc))
        elif exc is not None and not task.cancelled():
            if self._closed and _caused_by_disconnect(exc):
                logger.debug("ASGI app ended after its client disconnected: %r", exc)
            else:
                logger.error("Exception in ASGI application after the response", exc_info=exc)

    def _cancel_task(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _end(self, closed: bool) -> None:
        """The response is over: complete, or (``closed``) cut short by the server."""
        if self._ended.is_set():
            return
        self._closed = closed
        self._ended.set()
        if self._read is not None and not self._read.done():
            self._read.set_result(_DISCONNECT)
        for future in self._sends:
            if not future.done():
                future.set_result(_GONE)  # send() raises, with a traceback the future does not keep
        if closed and self._task is not None:
            if self._waiting:  # it gets http.disconnect / SendDisconnected now
                self._grace = self.loop.call_later(self.disconnect_grace, self._cancel_task)
            else:
                self._cancel_task()

    async def receive(self) -> Message:
        self._waiting += 1
        try:
            while not self._body_done and not self._ended.is_set():
                read = self._read
                if read is None:
                    read = self._read = self.loop.create_future()
                    self.commands.put(("receive", read))
                # Shielded: a receive() cancelled mid-read (anyio cancel scopes,
                # Request.is_disconnected) leaves the chunk for the next call.
                message = await asyncio.shield(read)
                if self._read is read:  # not already taken by a concurrent receive()
                    self._read = None
                    if message["type"] != "http.request" or not message.get("more_body"):
                        self._body_done = True
                    return message
            await self._ended.wait()  # after the body: http.disconnect once the response is over
            return _DISCONNECT
        finally:
            self._waiting -= 1

    async def send(self, message: Message) -> None:
        if self._ended.is_set() or self._sent_last:
            if self._closed:
                raise SendDisconnected("the client disconnected")
            raise RuntimeError(f"{message['type']!r} sent after the response completed")
        final = message["type"] == "http.response.body" and not message.get("more_body", False)
        self._sent_last = final
        future: asyncio.Future[Any] = self.loop.create_future()
        self._sends.add(future)
        self._waiting += 1
        self.commands.put(("send", message, future))
        try:
            gone = await future is _GONE
        finally:
            self._sends.discard(future)
            self._waiting -= 1
        if gone:
            raise SendDisconnected("the client disconnected")
        if final:
            self._end(closed=False)
