"""The gunicorn integration: ``gunicorn -k a2wsgi_mp.gunicorn.PoolWorker``.

A front in each gunicorn worker (it imports :mod:`a2wsgi_mp.pool`), so it lives
apart from :mod:`a2wsgi_mp.workers`, the pool's own child processes.
``worker`` is the worker class and its signals; ``config`` maps gunicorn's
settings to the pool's and uvicorn's options; ``hooks`` runs the per-request
layers (request limits, ``secure_scheme_headers``, ``pre_request`` /
``post_request``); ``server`` is the uvicorn server that drains on TERM.

The old path ``a2wsgi_mp.workers.gunicorn.PoolWorker`` still works (it is in
users' configs): :mod:`a2wsgi_mp.workers.gunicorn` re-exports this one.
"""

from .worker import PoolH11Worker, PoolWorker

__all__ = ["PoolH11Worker", "PoolWorker"]
