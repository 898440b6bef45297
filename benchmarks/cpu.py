"""CPU time per request by process role: the figure that bounds throughput.

A process spending ``c`` seconds of CPU per request serves at most ``1 / c``
requests a second, whatever the machine's other load; rps on a shared 2-core
machine swings ±30 % with the neighbours, CPU per request far less.  Measured
with psutil ``cpu_times()`` (user + system) of every process of the server's
tree before and after a load run, divided by the requests the run completed.

Roles: the server's first process is the *front* (a2wsgi_mp's event loop, the
only process of a single-process uvicorn, gunicorn's arbiter); all its
descendants are *workers* (a2wsgi_mp's pool, gunicorn's workers, the uvicorn
processes under ``uvicorn --workers N``).
"""

from __future__ import annotations

from typing import Any, Callable

import psutil

from .servers import Server


def snapshot(server: Server) -> dict[int, tuple[bool, float]]:
    """pid -> (is the front, CPU seconds so far) for every live process of the tree."""
    out: dict[int, tuple[bool, float]] = {}
    procs = server.processes()
    for i, p in enumerate(procs):
        try:
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[p.pid] = (i == 0, t.user + t.system)
    return out


def per_request(before: dict[int, tuple[bool, float]], after: dict[int, tuple[bool, float]],
                requests: int) -> dict[str, Any]:
    """µs of CPU per request, by role; processes born during the run count from zero."""
    front = workers = 0.0
    for pid, (is_front, secs) in after.items():
        used = secs - before.get(pid, (is_front, 0.0))[1]
        if is_front:
            front += used
        else:
            workers += used
    n = max(requests, 1)
    return {"front_us": round(front / n * 1e6, 1), "workers_us": round(workers / n * 1e6, 1),
            "total_us": round((front + workers) / n * 1e6, 1), "requests": requests}


def measured(server: Server, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one load run (a wrk result dict with ``requests``) and add its ``cpu_per_request``."""
    before = snapshot(server)
    r = run()
    after = snapshot(server)
    good = max(r.get("requests", 0) - r.get("non2xx", 0), 0)
    return dict(r, cpu_per_request=per_request(before, after, good))
