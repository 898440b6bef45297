"""A gunicorn worker class whose pools run ``worker_sched="autogroup"`` (tests/test_autogroup.py)."""

from a2wsgi_mp.gunicorn import PoolWorker


class AutogroupWorker(PoolWorker):
    POOL_OPTIONS = {"worker_sched": "autogroup"}
