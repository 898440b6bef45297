"""The old path of the gunicorn worker class, kept for users' configs.

``gunicorn -k a2wsgi_mp.workers.gunicorn.PoolWorker`` keeps working; the code
is in :mod:`a2wsgi_mp.gunicorn` (``-k a2wsgi_mp.gunicorn.PoolWorker``).  This
is the only module of :mod:`a2wsgi_mp.workers` that imports :mod:`a2wsgi_mp.pool`:
nothing in the pool's child processes imports it.
"""

from ..gunicorn.worker import (
    WORKER_BOOT_ERROR,
    GunicornFront,
    GunicornRequest,
    GunicornResponse,
    HookMiddleware,
    PoolH11Worker,
    PoolWorker,
    request_limits,
)

__all__ = [
    "WORKER_BOOT_ERROR",
    "GunicornFront",
    "GunicornRequest",
    "GunicornResponse",
    "HookMiddleware",
    "PoolH11Worker",
    "PoolWorker",
    "request_limits",
]
