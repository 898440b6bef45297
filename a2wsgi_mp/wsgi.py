"""A WSGI app inside an ASGI server, on a thread pool: a drop-in for a2wsgi's ``WSGIMiddleware``.

Same constructor, same in-process thread semantics (``workers`` threads in one
``ThreadPoolExecutor``), but built on the project's shared PEP 3333 code
(:mod:`a2wsgi_mp.environ`, :mod:`a2wsgi_mp.response`), which fixes what
a2wsgi users trip over:

* a client that disconnects mid-stream never leaves a thread blocked: the sink's
  waits are released and the app's iterable is closed (a2wsgi #48/#49);
* ``http.disconnect`` while reading ``wsgi.input`` raises :class:`~a2wsgi_mp.errors.InputDisconnected`
  instead of being read as end-of-body (no silently truncated uploads);
* headers leave with the first body chunk, so ``start_response(..., exc_info)``
  can still replace them;
* an exception of the app still reaches the ASGI server, as with a2wsgi, but
  only after the 500 went out (or the started response was cut), so error
  trackers, Starlette's ``ServerErrorMiddleware`` and test clients see it.

Moving to the process pool later is one class name: ``WSGIPool``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from .body import DISCONNECT, Body
from .environ import build_environ as _build_environ
from .errors import InputDisconnected, ResponseAborted
from .response import Headers, SinkGone, run_wsgi
from .types import Environ, Message, Receive, Scope, Send, WSGIApp

__all__ = ["Body", "ClientDisconnect", "InputDisconnected", "ResponseAborted", "WSGIMiddleware", "build_environ"]

#: The first name of :class:`~a2wsgi_mp.errors.InputDisconnected`.
ClientDisconnect = InputDisconnected

logger = logging.getLogger("a2wsgi_mp.wsgi")

#: Request body the disconnect watcher may read ahead, for a response that
#: streams before the app has read the upload.  Past it, a2wsgi's behaviour.
READ_AHEAD_LIMIT = 1024 * 1024


def build_environ(scope: Scope, body: IO[bytes] | Body) -> Environ:
    """An a2wsgi-compatible environ: the shared builder plus a2wsgi's extras.

    a2wsgi adds ``asgi.scope`` and lets a ``SCRIPT_NAME`` environment variable
    override the mount point; apps written for it rely on both.  Its
    ``wsgi.errors`` is ``sys.stdout`` (PEP 3333 allows any text stream): kept,
    so a migrated app's error output lands where it did.
    """
    environ = _build_environ(scope, body, errors=sys.stdout, multithread=True, multiprocess=True)  # type: ignore[arg-type]
    environ["asgi.scope"] = scope
    script_name = os.environ.get("SCRIPT_NAME", "")
    if script_name:
        environ["SCRIPT_NAME"] = script_name.encode(sys.getfilesystemencoding(), "surrogateescape").decode("latin-1")
    return environ


class WSGIMiddleware:
    """Convert a WSGI app into an ASGI app, running it on ``workers`` threads.

    ``send_queue_size`` bounds how many response messages a thread may queue
    ahead of a slow client before it blocks (a2wsgi's meaning, kept).
    """

    def __init__(self, app: WSGIApp, workers: int = 10, send_queue_size: int = 10) -> None:
        self.app = app
        self.send_queue_size = send_queue_size
        self.executor = ThreadPoolExecutor(thread_name_prefix="WSGI", max_workers=workers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            responder = WSGIResponder(self.app, self.executor, self.send_queue_size)
            return await responder(scope, receive, send)
        if scope["type"] == "websocket":  # WSGI has no WebSocket: refuse the handshake (403)
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1000})
            return
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return


class WSGIResponder:
    """One request: the ASGI side on the loop, the WSGI call on a pool thread.

    It is the :class:`~a2wsgi_mp.response.ResponseSink` of :func:`run_wsgi`.
    The thread posts messages with ``call_soon_threadsafe`` and waits on a
    ``threading.Condition`` for credit (at most ``send_queue_size`` messages in
    flight).  Every wait is released once the client is gone, which is what
    keeps a disconnect from pinning the thread.
    """

    def __init__(self, app: WSGIApp, executor: ThreadPoolExecutor, send_queue_size: int) -> None:
        self.app = app
        self.executor = executor
        self.send_queue_size = max(1, send_queue_size)
        self.loop = asyncio.get_running_loop()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._gone = False
        self._outbox: asyncio.Queue[tuple[Any, ...] | None] = asyncio.Queue()
        self._recv_lock = asyncio.Lock()
        self._body_eof = asyncio.Event()
        self._wake_watcher = asyncio.Event()
        self._stash: deque[Message] = deque()
        self._aborted: str | None = None
        self._send_error: BaseException | None = None
        self._app_error: BaseException | None = None
        self._asgi_receive: Receive
        self.input: Body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._asgi_receive = receive
        self.input = Body(self.loop, self._receive)
        environ = build_environ(scope, self.input)
        sender = self.loop.create_task(self._sender(send))
        watcher = self.loop.create_task(self._watch_disconnect(scope))
        context = contextvars.copy_context()
        try:
            await self.loop.run_in_executor(self.executor, context.run, self._run, environ)
            if not self._gone:  # a gone client's send() may never return: do not wait on it
                self._outbox.put_nowait(None)
                await sender
        except BaseException:
            self._set_gone()  # cancelled by the server: free the thread's waits
            raise
        finally:
            watcher.cancel()
            sender.cancel()
        error = self._send_error
        if error is not None and not isinstance(error, OSError):
            raise error
        app_error, self._app_error = self._app_error, None
        if app_error is not None and error is None:
            # The 500 is out (or the response cut): the server logs it and, when
            # the response had started, drops the connection.  Re-raised with
            # its own traceback, as a2wsgi and uvicorn's WSGI middleware do.
            raise app_error
        if self._aborted is not None and error is None:
            raise ResponseAborted(self._aborted)

    # -- worker thread side ---------------------------------------------------

    def _run(self, environ: Environ) -> None:
        logged: list[str] = []

        def log_error(message: str) -> None:
            # The first error is re-raised to the server, which logs it: only a
            # debug line here, so a migration from a2wsgi logs no duplicate.
            # Later ones (a failing close() after it) are not raised: logged.
            (logger.error if logged else logger.debug)(message)
            logged.append(message)

        try:
            self._app_error = run_wsgi(self.app, environ, self, log_error)
        except SinkGone:
            pass

    def _post(self, item: tuple[Any, ...]) -> None:
        with self._cond:
            while self._in_flight >= self.send_queue_size and not self._gone:
                self._cond.wait()
            if self._gone:
                raise SinkGone("the client disconnected")
            self._in_flight += 1
        try:
            self.loop.call_soon_threadsafe(self._outbox.put_nowait, item)
        except RuntimeError as exc:  # loop closed
            self._set_gone()
            raise SinkGone("the event loop is gone") from exc

    def start(self, status: int, headers: Headers, body: bytes, done: bool) -> None:
        self._post(("start", status, headers, body, done))

    def body(self, chunk: bytes) -> None:
        self._post(("body", chunk))

    def end(self) -> None:
        self._post(("end",))

    def abort(self, reason: str) -> None:
        self._post(("abort", reason))

    def cancelled(self) -> bool:
        return self._gone

    def _set_gone(self) -> None:
        with self._cond:
            self._gone = True
            self._cond.notify_all()
        body = getattr(self, "input", None)
        if body is not None:
            body.abandon()

    # -- event loop side ------------------------------------------------------

    async def _sender(self, send: Send) -> None:
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            try:
                kind = item[0]
                if kind == "start":
                    _, status, headers, chunk, done = item
                    self._wake_watcher.set()
                    await send({"type": "http.response.start", "status": status, "headers": headers})
                    await send({"type": "http.response.body", "body": chunk, "more_body": not done})
                elif kind == "body":
                    await send({"type": "http.response.body", "body": item[1], "more_body": True})
                elif kind == "end":
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                else:
                    self._aborted = item[1]
            except Exception as exc:  # uvicorn >= 0.28 raises its ClientDisconnected here
                self._send_error = exc
                self._set_gone()
                return
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify()

    def _note(self, message: Message) -> None:
        if message.get("type") == "http.disconnect":
            self._set_gone()
        elif not message.get("more_body", False):
            self._body_eof.set()
            self._wake_watcher.set()

    async def _receive(self) -> Message:
        """``receive()`` as :class:`Body` sees it: read-ahead messages first."""
        if self._stash:
            return self._stash.popleft()
        if self._gone:
            return DISCONNECT
        async with self._recv_lock:
            if self._stash:
                return self._stash.popleft()
            if self._gone:
                return DISCONNECT
            message = await self._asgi_receive()
        self._note(message)
        return message

    async def _read_ahead(self) -> int:
        async with self._recv_lock:
            if self._body_eof.is_set() or self._gone:
                return 0
            message = await self._asgi_receive()
        self._note(message)
        if message.get("type") == "http.disconnect":
            return 0
        self._stash.append(message)
        return len(message.get("body", b""))

    async def _watch_disconnect(self, scope: Scope) -> None:
        """Notice a client that leaves while the response streams.

        ``receive()`` only reports a disconnect once the body has been read, so
        the body is read ahead into ``_stash`` (where :class:`Body` finds it):
        at once for a request that declares none (plain GETs), and, once the
        response has started, up to :data:`READ_AHEAD_LIMIT` for the rest.
        """
        if _declares_no_body(scope):
            await self._read_ahead()
        await self._wake_watcher.wait()
        ahead = 0
        while not self._gone and not self._body_eof.is_set() and ahead <= READ_AHEAD_LIMIT:
            ahead += await self._read_ahead()
        if not self._body_eof.is_set():
            return  # a large upload the app left unread: we cannot see past it
        while not self._gone:
            self._note(await self._asgi_receive())


def _declares_no_body(scope: Scope) -> bool:
    if scope.get("http_version", "1.1") not in ("1.0", "1.1"):
        return False  # HTTP/2 bodies need no Content-Length
    for name, value in scope.get("headers") or ():
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return False
    return True
