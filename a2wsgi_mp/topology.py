"""How many processes serve the app, said out loud at start-up.

``uvicorn --workers 2 mod:app`` with ``WSGIPool(workers=2)`` runs two fronts,
each with its own pool: four app processes, not two.  The front cannot be told
by every server how many siblings it has, so :func:`detect_fronts` looks: a
front started by :mod:`multiprocessing` (uvicorn, hypercorn) reads its parent's
``--workers``/``-w`` (or ``WEB_CONCURRENCY``), else counts its siblings.
The CLI and the gunicorn worker know the number and say so instead.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import re
from typing import Any

import psutil

WORKER_FLAGS = ("--workers", "-w")
#: Where uvicorn, granian and PaaS conventions take the number of server processes from.
WORKER_ENV = ("UVICORN_WORKERS", "GRANIAN_WORKERS", "WEB_CONCURRENCY")


def _shape(cmdline: list[str]) -> str:
    """A command line without its numbers: siblings differ only there
    (``spawn_main(pipe_handle=7)``, granian's ``worker-2`` title)."""
    return re.sub(r"\d+", "#", " ".join(cmdline).strip())


def _flag_value(cmdline: list[str]) -> int | None:
    for i, arg in enumerate(cmdline):
        for flag in WORKER_FLAGS:
            value = None
            if arg == flag and i + 1 < len(cmdline):
                value = cmdline[i + 1]
            elif arg.startswith(flag + "=") and flag.startswith("--"):
                value = arg.split("=", 1)[1]
            if value is not None and value.isdigit():
                return int(value)
    return None


def detect_fronts() -> tuple[int | None, str]:
    """(number of fronts or None when unknown, how it was found)."""
    if multiprocessing.parent_process() is None:
        return 1, "one server process"
    try:
        parent = psutil.Process(os.getppid())
        number = _flag_value(parent.cmdline())
        if number:
            return number, f"--workers of the server process {parent.pid}"
        for name in WORKER_ENV:
            value = os.environ.get(name, "")
            if value.isdigit():
                return int(value), name
        me = _shape(psutil.Process().cmdline())
        siblings = [c for c in parent.children() if _shape(c.cmdline()) == me]
        return None, f"{len(siblings)} server processes under pid {parent.pid} so far"
    except psutil.Error:
        return None, "a server process among several"


def server_stack(config: Any) -> str:
    """The HTTP parser and event loop a :class:`uvicorn.Config` runs on (``auto`` resolved as uvicorn does)."""
    http, loop = getattr(config, "http", "auto"), getattr(config, "loop", "auto")
    if http == "auto":
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = http if isinstance(http, str) else getattr(http, "parser", None) or getattr(http, "__name__", str(http))
    loop = loop if isinstance(loop, str) else getattr(loop, "__name__", str(loop))
    return f"HTTP parser {http}, event loop {loop}"


def fast_path_unhooked(config: Any, fast_path: bool) -> str | None:
    """What to warn of when ``fast_path`` is on but the protocol of ``config`` (a2wsgi_mp's
    httptools one) finds no uvicorn hook to take requests by (uvicorn < 0.45, or a future
    uvicorn that renamed it): every request would quietly take the ASGI path. Else None."""
    if not fast_path or getattr(getattr(config, "http", None), "fast_path_hook", True) is not False:
        return None
    import uvicorn

    return (f"the fast path is off: uvicorn {uvicorn.__version__} has no HttpToolsProtocol._start_asgi_task "
            f"to hook (a2wsgi-mp needs uvicorn >= 0.53); every request takes the ASGI path")


def _n(count: int, word: str, plural: str = "") -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def describe(fronts: int | None, how: str, workers: int, threads: int) -> str:
    per_front = f"{_n(workers, 'worker')} x {_n(threads, 'thread')}"
    if fronts is None:
        return (f"process layout: ? fronts ({how}) x {per_front} per front — every front runs its "
                f"own pool, so app processes = fronts x {workers}")
    processes = _n(fronts * workers, "app process", "app processes")
    return (f"process layout: {_n(fronts, 'front')} ({how}) x {per_front} = {processes}, "
            f"{_n(fronts * workers * threads, 'request')} at once")
