"""The app alone: CPU per request of a real page's WSGI app called in a plain loop, no server.

Every server's CPU per request on a real page is this plus what the server adds
(its HTTP, its IPC, and the cold caches of a process that sleeps between
requests).  Measured in a fresh process set up as a worker is (the app loaded,
warmed up, its heap frozen with ``gc.freeze()`` as our zygote does), with warm
caches: a floor for every server, so ``total - app alone`` is an upper bound of
each server's own share.  On 2 cores it is what makes the real-page goals a
matter of arithmetic (docs/performance.md, "The floor, measured").

    python -m benchmarks.appcost benchmarks.django_site:application /admin/login/ 1500
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import subprocess
import sys
import time
from typing import Any

from .worker_http import _environ

#: Calls before the measured ones (templates compiled, caches filled).
WARMUP = 300


#: wrk's address, as the app sees it.
_PEER = ("127.0.0.1", 40000)
#: What wrk sends: the Host header (and nothing else a page looks at).
_HEADERS = [(b"host", b"127.0.0.1:8000")]


def _call(app: Any, path: str) -> tuple[str, int]:
    status: list[str] = []

    def start_response(s: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status.append(s)

    body = app(_environ(_PEER, b"GET", path.encode(), _HEADERS, b"", 8000), start_response)
    try:
        size = sum(len(chunk) for chunk in body)
    finally:
        if hasattr(body, "close"):
            body.close()
    return status[0], size


def measure(spec: str, path: str, requests: int) -> dict[str, Any]:
    """CPU µs per request of ``spec`` (module:attribute) serving ``path``, in this process."""
    module, attr = spec.split(":")
    app = getattr(importlib.import_module(module), attr)
    status, size = _call(app, path)
    if not status.startswith("200"):
        raise RuntimeError(f"{spec} {path}: {status}")
    for _ in range(WARMUP):
        _call(app, path)
    gc.freeze()
    t0 = time.process_time()
    for _ in range(requests):
        _call(app, path)
    return {"us": round((time.process_time() - t0) / requests * 1e6, 1), "requests": requests, "bytes": size}


def run(spec: str, path: str, requests: int, tmpdir: str) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter (``BENCH_TMPDIR``: the run's, for the Django DB)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.appcost", spec, path, str(requests)],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, BENCH_TMPDIR=tmpdir), check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
