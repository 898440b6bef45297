"""CPU time per request by process role: the figure that bounds throughput.

A process spending ``c`` seconds of CPU per request serves at most ``1 / c``
requests a second, whatever the machine's other load; rps on a shared 2-core
machine swings ±30 % with the neighbours, CPU per request far less.  Measured
with psutil ``cpu_times()`` (user + system) of every process of the server's
tree before and after a load run, divided by the requests the run completed.

Roles: the server's first process is the *front* (a2wsgi_mp's event loop, the
only process of a single-process uvicorn, gunicorn's arbiter); all its
descendants are *workers* (a2wsgi_mp's pool, gunicorn's workers, the uvicorn
processes under ``uvicorn --workers N``) except, for a2wsgi_mp, processes that
are not the pool's (the fronts under ``--fronts N``): front.
With several fronts the front figure is their sum per request.
"""

from __future__ import annotations

import cProfile
import re
from typing import Any, Callable

import psutil

from .servers import Server

#: A pool process: its spawn command line, or its title (``a2wsgi-mp: worker 3 [app]``).
_POOL_PROCESS = re.compile(r"a2wsgi_mp\.workers|: (?:worker \d+|zygote)\b")


def snapshot(server: Server) -> dict[int, tuple[bool, float, float]]:
    """pid -> (is the front, user CPU seconds, system CPU seconds) for every live process of the tree."""
    out: dict[int, tuple[bool, float, float]] = {}
    procs = server.processes()
    ours = server.cfg.server.startswith("a2wsgi_mp")
    for i, p in enumerate(procs):
        try:
            t = p.cpu_times()
            # a2wsgi_mp: the pool's processes (zygote, workers) run a2wsgi_mp.workers, or
            # carry its process title; everything else (with --fronts N: the master and its
            # fronts) is front.
            front = i == 0 or (ours and not _POOL_PROCESS.search(" ".join(p.cmdline())))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[p.pid] = (front, t.user, t.system)
    return out


def per_request(before: dict[int, tuple[bool, float, float]], after: dict[int, tuple[bool, float, float]],
                requests: int) -> dict[str, Any]:
    """µs of CPU per request, by role; processes born during the run count from zero.

    ``front_sys_us`` is the kernel's share of the front's (socket reads and
    writes, wake-ups); ``fronts`` counts the front processes that did at least
    a tenth of the front's work (the master of ``--fronts N`` does not).
    """
    used: dict[int, tuple[bool, float, float]] = {}
    for pid, (is_front, user, system) in after.items():
        _, user0, system0 = before.get(pid, (is_front, 0.0, 0.0))
        used[pid] = (is_front, user - user0, system - system0)
    front = sum(u + s for f, u, s in used.values() if f)
    front_sys = sum(s for f, _, s in used.values() if f)
    workers = sum(u + s for f, u, s in used.values() if not f)
    fronts = sum(1 for f, u, s in used.values() if f and front and (u + s) >= 0.1 * front)
    n = max(requests, 1)
    return {"front_us": round(front / n * 1e6, 1), "front_sys_us": round(front_sys / n * 1e6, 1),
            "workers_us": round(workers / n * 1e6, 1), "total_us": round((front + workers) / n * 1e6, 1),
            "fronts": fronts, "requests": requests}


def measured(server: Server, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one load run (a wrk result dict with ``requests``) and add its ``cpu_per_request``."""
    before = snapshot(server)
    r = run()
    after = snapshot(server)
    good = max(r.get("requests", 0) - r.get("non2xx", 0), 0)
    return dict(r, cpu_per_request=per_request(before, after, good))


def print_profile(profile: "cProfile.Profile", requests: int, rows: int = 25) -> None:
    """The functions that cost most per request (self time), from a micro-benchmark's cProfile."""
    import pstats

    stats = pstats.Stats(profile)
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:rows]  # type: ignore[attr-defined]
    for (path, line, name), (_, calls, self_time, _, _) in top:
        print(f"{calls / requests:6.2f}/request  self {self_time / requests * 1e6:6.2f} us  "
              f"{path.rsplit('/', 2)[-1]}:{line} {name}")
