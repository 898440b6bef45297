"""gunicorn worker classes with a short header timeout, for tests/test_head_limits.py
(``HEADER_TIMEOUT`` is the class attribute a deployment overrides the same way)."""

from a2wsgi_mp.gunicorn import PoolH11Worker, PoolWorker


class ShortPoolWorker(PoolWorker):
    HEADER_TIMEOUT = 2.0


class ShortPoolH11Worker(PoolH11Worker):
    HEADER_TIMEOUT = 2.0
