"""ASGI entry points around :mod:`tests.apps.compat_wsgi` for the servers of the matrix.

``pool``: a :class:`~a2wsgi_mp.WSGIPool` (``COMPAT_WORKERS`` processes) for
uvicorn or hypercorn.  ``middleware``: the in-process ``WSGIMiddleware``; with
``A2WSGI_IMPL=a2wsgi`` it is a2wsgi's, the reference the matrix compares to —
the same line of code, one import changed.
"""

from __future__ import annotations

import os

if os.environ.get("A2WSGI_IMPL") == "a2wsgi":
    from a2wsgi import WSGIMiddleware
else:
    from a2wsgi_mp import WSGIMiddleware

from a2wsgi_mp import WSGIPool

from .compat_wsgi import application

pool = WSGIPool("tests.apps.compat_wsgi:application", workers=int(os.environ.get("COMPAT_WORKERS", "2")))
middleware = WSGIMiddleware(application)
