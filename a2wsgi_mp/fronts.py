"""``--fronts N``: several front processes on one listening socket.

Every request crosses a front, so one front caps the whole pool at about
``1 / (front CPU per request)`` requests a second whatever the number of
workers (see docs/performance.md).  With ``--fronts N`` the CLI binds the
socket once and hands it to uvicorn's own process manager
(:class:`uvicorn.supervisors.Multiprocess`, the one behind ``uvicorn
--workers``): N front processes accept on the shared socket, each with its own
pool of ``workers // N`` worker processes.  What that manager does is what
``uvicorn --workers`` users know:

* a front that dies (or stops answering its health check) is replaced;
* ``SIGHUP`` replaces the fronts one at a time, each new one (with a fresh
  pool that re-imports the app) ready before the old one drains;
* ``SIGTERM``/``SIGINT`` drain every front (each stops its pool gracefully).

The fronts are fresh interpreters (multiprocessing's spawn), so the app and
the pool options travel as an import string and JSON in an environment
variable, read by :func:`front_app` in each front.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from typing import Any

from .front import WSGIPool

#: Environment variable carrying the app and pool options to the fronts.
ENV = "A2WSGI_MP_FRONT"


def share(workers: int, fronts: int) -> int:
    """Worker processes per front: an even share of ``workers`` (at least one)."""
    return max(1, workers // fronts)


def front_app() -> WSGIPool:
    """uvicorn app factory run in each front process."""
    spec = json.loads(os.environ[ENV])
    from .cli import _setup_logging  # the fronts log like the single-front CLI

    _setup_logging(spec["log_level"])
    return WSGIPool(spec["app"], **spec["options"])


def run_fronts(app: str, options: dict[str, Any], fronts: int, level: int, **uvicorn_options: Any) -> bool:
    """Serve ``app`` from ``fronts`` front processes until told to stop; True if they started."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from .config import PoolConfig

    options = dict(options)
    total = options.get("workers") or PoolConfig(**options).workers
    options["workers"] = share(total, fronts)
    if options["workers"] * fronts != total:
        logging.getLogger("a2wsgi_mp").warning(
            "%d workers do not split evenly over %d fronts: running %d per front (%d in all)",
            total, fronts, options["workers"], options["workers"] * fronts)
    os.environ[ENV] = json.dumps({"app": app, "options": options, "log_level": level})
    config = uvicorn.Config("a2wsgi_mp.fronts:front_app", factory=True, workers=fronts, **uvicorn_options)
    sock = config.bind_socket()
    try:
        if "target" in inspect.signature(Multiprocess.__init__).parameters:  # uvicorn < 0.50
            supervisor = Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock])
        else:
            supervisor = Multiprocess(config, sockets=[sock])
        supervisor.run()
    finally:
        sock.close()
    return not any(getattr(p, "exitcode", None) == STARTUP_FAILURE for p in supervisor.processes)
