"""The exceptions a2wsgi_mp raises to user code or to the server, in one place.

Each name says where it is raised.  The two "client left" errors are
``OSError`` subclasses (what a real socket raises, so frameworks already treat
them as a lost client); their first names, kept as aliases, were one letter
apart: ``a2wsgi_mp.wsgi.ClientDisconnect`` is :class:`InputDisconnected`,
``a2wsgi_mp.asgi.ClientDisconnected`` is :class:`SendDisconnected`.
"""

from __future__ import annotations

__all__ = [
    "BootFailed",
    "BootInterrupted",
    "InputDisconnected",
    "LifespanFailure",
    "RemoteAppError",
    "ResponseAborted",
    "SendDisconnected",
]


class BootFailed(Exception):
    """No worker could load the app; the message carries the worker's error.

    Raised by :class:`~a2wsgi_mp.WSGIPool` at startup (ASGI lifespan) and to
    the requests waiting for a worker.
    """


class BootInterrupted(BootFailed):
    """The pool was stopped (a SIGTERM, a shutdown) while its workers were still loading the
    app: the start-up ends at once, and nothing failed -- a ``systemctl stop`` during a slow
    start is not the app's fault, nor a reason to wait out the boot timeout."""


class RemoteAppError(Exception):
    """The WSGI app raised in a pool worker while serving this request.

    Raised by :class:`~a2wsgi_mp.WSGIPool` with ``raise_app_errors=True``,
    after the 500 was sent (or the started response cut), so error trackers'
    ASGI middlewares, Starlette's ``ServerErrorMiddleware`` and test clients
    see app errors as they do with the in-process ``WSGIMiddleware``.  The
    exception itself cannot cross the process boundary (it may not pickle, and
    the protocol carries no pickle): ``remote_traceback`` is its text.
    """

    def __init__(self, remote_traceback: str, worker_pid: int | None = None) -> None:
        super().__init__(f"in worker {worker_pid}: {remote_traceback}")
        #: The worker's log line: "Error in WSGI application (GET /path):" and the traceback.
        self.remote_traceback = remote_traceback
        self.worker_pid = worker_pid


class InputDisconnected(OSError):
    """``wsgi.input`` (:class:`~a2wsgi_mp.wsgi.WSGIMiddleware`): the client left
    before the request body was complete.

    An ``OSError`` because that is what a real socket read raises, so Django
    (``UnreadablePostError``), Werkzeug and friends already treat it as a failed
    upload rather than a short one.  Was ``a2wsgi_mp.wsgi.ClientDisconnect``.
    """


class ResponseAborted(RuntimeError):
    """Raised to the ASGI server when a started response cannot be completed.

    Raising is the only way ASGI has to make the server cut the connection, so
    the client sees a broken response instead of a short one passed as whole.
    When the cut comes from an exception of the app, that exception is raised
    instead (a2wsgi's behaviour); this one is for a body short of its
    Content-Length.
    """


class SendDisconnected(OSError):
    """``send()`` (:class:`~a2wsgi_mp.asgi.ASGIMiddleware`) after the WSGI server
    closed the response: the client is gone (ASGI spec 2.4).

    Was ``a2wsgi_mp.asgi.ClientDisconnected`` (the name uvicorn gives its own).
    """


class LifespanFailure(RuntimeError):
    """The app's lifespan startup failed: this process cannot serve it."""
