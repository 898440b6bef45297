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

The fronts are fresh interpreters (multiprocessing's spawn), so the app, the
pool options and the request-head limits travel as an import string and JSON
in an environment variable, read by :func:`front_app` and, for uvicorn's
``http`` protocol class, :func:`__getattr__` in each front.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from types import SimpleNamespace
from typing import Any

from ..headlimits.options import http_protocol
from ..pool.app import WSGIPool

#: Environment variable carrying the app and pool options to the fronts.
ENV = "A2WSGI_MP_FRONT"
#: The settings that make a front's bounded HTTP protocol (a2wsgi_mp.headlimits).
HEAD_SETTINGS = ("http", "limit_request_line", "limit_request_fields", "limit_request_field_size",
                 "limit_request_head", "header_timeout", "limit_connections", "send_timeout")


def share(workers: int, fronts: int) -> int:
    """Worker processes per front: an even share of ``workers`` (at least one)."""
    return max(1, workers // fronts)


def front_app() -> WSGIPool:
    """uvicorn app factory run in each front process."""
    spec = json.loads(os.environ[ENV])
    pool = WSGIPool(spec["app"], **spec["options"])
    pool.fronts = (spec["fronts"], "--fronts")
    return pool


def __getattr__(name: str) -> Any:
    """``a2wsgi_mp.cli.fronts:front_protocol``, the ``http`` uvicorn imports in each front:
    a class made at run time cannot be pickled to a spawned front, its recipe can."""
    if name == "front_protocol":
        return http_protocol(SimpleNamespace(**json.loads(os.environ[ENV])["head"]))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_fronts(settings: Any, **uvicorn_options: Any) -> bool:
    """Serve ``settings.app`` from ``settings.fronts`` front processes until told to stop;
    True if they started."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from ..config import PoolConfig

    fronts = settings.fronts
    options = settings.target("pool")
    total = PoolConfig(**options)
    assert isinstance(total.workers, int)  # (PoolConfig resolves a (min, max) pair)
    options["workers"] = share(total.workers, fronts)
    if total.elastic:
        options["workers_min"] = share(total.workers_min, fronts)
        options["workers_max"] = share(total.workers_max, fronts)
    if options["workers"] * fronts != total.workers:
        logging.getLogger("a2wsgi_mp").warning(
            "%d workers do not split evenly over %d fronts: running %d per front (%d in all)",
            total.workers, fronts, options["workers"], options["workers"] * fronts)
    head = {name: getattr(settings, name) for name in HEAD_SETTINGS}
    http_protocol(SimpleNamespace(**head))  # a bad value fails here, once, not in every front
    os.environ[ENV] = json.dumps({"app": settings.app, "options": options, "fronts": fronts, "head": head})
    uvicorn_options["http"] = f"{__name__}:front_protocol"
    config = uvicorn.Config("a2wsgi_mp.cli.fronts:front_app", factory=True, workers=fronts, **uvicorn_options)
    sock = config.bind_socket()
    try:
        if "target" in inspect.signature(Multiprocess.__init__).parameters:  # uvicorn < 0.50
            supervisor = Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock])  # type: ignore[call-arg]
        else:
            supervisor = Multiprocess(config, sockets=[sock])
        supervisor.run()
    finally:
        sock.close()
    return not any(getattr(p, "exitcode", None) == STARTUP_FAILURE for p in supervisor.processes)
