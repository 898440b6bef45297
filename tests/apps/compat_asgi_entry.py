"""ASGI entry points around :mod:`tests.apps.compat_wsgi` for the servers of the matrix.

``pool``: a :class:`~a2wsgi_mp.WSGIPool` (``COMPAT_WORKERS`` processes) for
uvicorn or hypercorn.  ``middleware``: the in-process ``WSGIMiddleware``; with
``A2WSGI_IMPL=a2wsgi`` it is a2wsgi's, the reference the matrix compares to —
the same line of code, one import changed — behind an error tracker that
reports the exceptions reaching it.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("A2WSGI_IMPL") == "a2wsgi":
    from a2wsgi import WSGIMiddleware
else:
    from a2wsgi_mp import WSGIMiddleware

from a2wsgi_mp import WSGIPool

from .compat_wsgi import application



class ErrorTracker:
    """What error trackers' ASGI middlewares (Sentry's, Rollbar's…) do: see the
    exception the app raises, report it, re-raise it to the server."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            print(f"error tracker saw {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            raise


pool = WSGIPool("tests.apps.compat_wsgi:application", workers=int(os.environ.get("COMPAT_WORKERS", "2")))
middleware = ErrorTracker(WSGIMiddleware(application))
