"""ASGI entry points around :mod:`tests.apps.compat_wsgi` for the servers of the matrix.

``pool``: a :class:`~a2wsgi_mp.WSGIPool` (``COMPAT_WORKERS`` processes) for
uvicorn or hypercorn.  ``pool_raising``: the same with ``raise_app_errors=True``
behind an error tracker.  ``middleware``: the in-process ``WSGIMiddleware``
behind an error tracker; with ``A2WSGI_IMPL=a2wsgi`` it is a2wsgi's, the
reference the matrix compares to — the same line of code, one import changed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

APP = "tests.apps.compat_wsgi:application"


class ErrorTracker:
    """What error trackers' ASGI middlewares (Sentry's, Rollbar's…) do: see the
    exception the app raises, report it, re-raise it to the server."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
            print(f"error tracker saw {type(exc).__name__}: {first}", file=sys.stderr, flush=True)
            raise


def _pool(**options: Any) -> Any:
    from a2wsgi_mp import WSGIPool

    return WSGIPool(APP, workers=int(os.environ.get("COMPAT_WORKERS", "2")), **options)


def _middleware() -> Any:
    if os.environ.get("A2WSGI_IMPL") == "a2wsgi":
        from a2wsgi import WSGIMiddleware
    else:
        from a2wsgi_mp import WSGIMiddleware

    from .compat_wsgi import application

    return ErrorTracker(WSGIMiddleware(application))


# Eager: hypercorn evaluates "module:attr" in the module's namespace, where a
# PEP 562 __getattr__ is not consulted.  Building a WSGIPool starts nothing.
pool = _pool()
pool_raising = ErrorTracker(_pool(raise_app_errors=True))
middleware = _middleware()
