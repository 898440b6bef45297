"""A gunicorn config (``-c python:tests.apps.gunicorn_pool_hooks``) whose process hooks leave a
marker per call in ``$GUNICORN_TEST_MARKERS``, naming the process they ran in: gunicorn calls them
for its own workers, and ``PoolWorker`` for the pool's processes too (docs/gunicorn.md)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.apps.markers import write_marker

MARKERS = Path(os.environ.get("GUNICORN_TEST_MARKERS", "."))


def _mark(name: str, worker: object) -> None:
    write_marker(MARKERS / f"{name}-{os.getpid()}-{time.monotonic_ns()}",
                 json.dumps({"in": os.getpid(), "worker": getattr(worker, "pid", None)}))


def post_fork(server, worker):
    _mark("post_fork", worker)


def worker_exit(server, worker):
    _mark("worker_exit", worker)


def child_exit(server, worker):
    _mark("child_exit", worker)
