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
* the lifespan probe of ``"auto"`` never runs a one-shot app's response:
  an app that answers the ``lifespan`` scope with HTTP messages (a bare
  ``StreamingResponse``, ``FileResponse``, a raw app without a scope check) is
  stopped at its first ``send`` and taken not to support lifespan, as uvicorn
  does, so its body iterator and background task are left for the request;
* background work after the response (Starlette ``BackgroundTask``) is awaited
  in the iterable's ``close()``, after the server has finished the response,
  so a streamed response is not held open for it;
* disconnects follow the ASGI HTTP spec 2.4 (see :mod:`.asgi_bridge`):
  ``receive()`` returns ``http.disconnect`` once the response is over, so
  listen-for-disconnect tasks end, and when the server closes an unfinished
  response (the client left) ``send()`` raises :class:`~a2wsgi_mp.errors.SendDisconnected`
  and the app is cancelled if it does not stop by itself.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import weakref
from typing import Any, Literal

from .asgi_bridge import RequestBridge
from .errors import LifespanFailure, SendDisconnected
from .lifespan import Lifespan
from .types import ASGIApp, Environ, Scope, StartResponse

__all__ = ["ASGIMiddleware", "ClientDisconnected", "LifespanFailure", "SendDisconnected", "build_scope"]

#: The first name of :class:`~a2wsgi_mp.errors.SendDisconnected`.
ClientDisconnected = SendDisconnected

logger = logging.getLogger("a2wsgi_mp.asgi")


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
    #: Seconds an app whose client left may run on (it has been sent
    #: ``http.disconnect`` / ``SendDisconnected``) before it is cancelled.
    disconnect_grace = 5.0

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

    def __call__(self, environ: Environ, start_response: StartResponse) -> RequestBridge:
        loop = self.loop
        scope = build_scope(environ)
        scope["state"] = dict(self.state)
        return RequestBridge(self.app, loop, scope, environ, start_response, self.wait_time, self.disconnect_grace)
