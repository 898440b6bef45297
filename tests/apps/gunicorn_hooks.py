"""A gunicorn config file (``-c python:tests.apps.gunicorn_hooks``) whose hooks
leave marker files in ``$GUNICORN_TEST_MARKERS``, for the hook tests."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.apps.markers import write_marker

MARKERS = Path(os.environ.get("GUNICORN_TEST_MARKERS", "."))


def _mark(name: str, data: object = "") -> None:
    write_marker(MARKERS / f"{name}-{os.getpid()}-{time.monotonic_ns()}", json.dumps(data))


def post_worker_init(worker):
    _mark("post_worker_init", {"pool": type(worker.pool).__name__})


def worker_int(worker):
    _mark("worker_int")


def worker_abort(worker):
    _mark("worker_abort")


def worker_exit(server, worker):
    _mark("worker_exit")


def pre_request(worker, req):
    if req.path == "/refused":
        raise RuntimeError("pre_request refuses this one")
    _mark("pre_request", {"method": req.method, "path": req.path, "uri": req.uri})


def post_request(worker, req, environ, resp):
    _mark("post_request", {"path": req.path, "status": resp.status, "code": resp.status_code,
                           "sent": resp.sent, "PATH_INFO": environ.get("PATH_INFO")})
