"""Exceptions an entry point raises to the ASGI server on the app's behalf."""

from __future__ import annotations


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
