"""Real pages (R1-R3): a stock Django site and a Flask app, every server side by side.

Hello world hides what users see: on a real page the app's CPU dominates and
the server's share moves with the size of the response and its headers.  Here
every server configuration of one app is started at once, warmed up, then
driven in interleaved rounds (the order reversed every other round), so each
pair of figures compared comes from the same minutes of a shared machine:

* R1 ``/admin/login/`` on the Django site (templates, CSRF cookie, session and
  auth middleware; ~4 KiB of HTML, 10 response headers);
* R2 ``/users/`` on the Django site (one ORM query on sqlite, 20 rows as JSON);
* R3 ``/`` on the Flask app (a Jinja page with inheritance and a 30-row loop).

Each run is ``wrk -t1 -c32`` with the CPU per request of every process of the
server's tree, by role (:mod:`benchmarks.cpu`): the figure that bounds
throughput, steadier than rps on a busy machine.
"""

from __future__ import annotations

import re
import resource
import time
from typing import Any

import psutil

from . import appcost, cpu
from .configs import APP_ALONE, MP_NAMES, WSGI_APPS, Config
from .loadgen import run_wrk
from .servers import Server, ServerError

#: Requests per app-alone measurement (~1-3 s a page).
APP_ALONE_REQUESTS = 1500

#: scenario -> (the app, the path wrk requests).
PAGES: dict[str, tuple[str, str]] = {
    "R1": ("django", "/admin/login/"),
    "R2": ("django", "/users/"),
    "R3": ("flask", "/"),
}


def config(server: str, workers: int, threads: int, app: str) -> Config:
    """Two processes of one thread each, as gunicorn sync; a2wsgi (threads in one
    uvicorn process per worker) keeps its thread pool."""
    return Config(server, workers, threads if server == "a2wsgi" else 1, app)


def _busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)


def _once(server: Server, path: str, conns: int, duration: float) -> dict[str, Any]:
    """One wrk run with CPU per request by role, and how busy the rest of the machine was:
    ``others_cores`` = CPU used by everything but the server's tree and wrk, in cores."""
    busy0, kids0, t0 = _busy(), resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    r = cpu.measured(server, lambda: run_wrk(server.url + path, conns, duration))
    busy1, kids1, t1 = _busy(), resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    wrk = (kids1.ru_utime - kids0.ru_utime) + (kids1.ru_stime - kids0.ru_stime)
    tree = r["cpu_per_request"]["total_us"] * r["cpu_per_request"]["requests"] / 1e6
    return dict(r, wrk_cores=round(wrk / (t1 - t0), 2),
                others_cores=round(max(0.0, busy1 - busy0 - wrk - tree) / (t1 - t0), 2))


def run(scenarios: list[str], servers: list[str], mode: dict[str, Any], tmpdir: str, workers: int,
        threads: int) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """results[scenario][server] for the real-page scenarios asked for, and notes."""
    results: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    rounds = max(2, mode["repeat"]) if mode["repeat"] > 1 else 1
    apps = [app for app in ("django", "flask") if any(PAGES[sc][0] == app for sc in scenarios)]
    for app in apps:
        pages = [sc for sc in scenarios if PAGES[sc][0] == app]
        live: dict[str, Server] = {}
        print(f"- real pages ({app}: {', '.join(f'{sc} {PAGES[sc][1]}' for sc in pages)}): starting "
              f"{', '.join(servers)}", flush=True)
        try:
            for name in servers:
                server = Server(config(name, workers, threads, app), tmpdir)
                try:
                    server.start()
                    live[name] = server
                except ServerError as exc:
                    notes.append(str(exc))
                    server.stop()
                    for sc in pages:
                        results.setdefault(sc, {})[name] = {"failed": True, "error": "server did not start"}
            for sc in pages:  # warm-up: templates compiled, connections and caches made, in every process
                for server in live.values():
                    run_wrk(server.url + PAGES[sc][1], mode["conns"], 1)
            runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
            alone_runs: dict[str, list[float]] = {}
            for rnd in range(rounds):
                order = list(live.items()) if rnd % 2 == 0 else list(reversed(live.items()))
                for sc in pages:
                    for name, server in order:
                        r = _once(server, PAGES[sc][1], mode["conns"], mode["duration"])
                        runs.setdefault((sc, name), []).append(r)
                        c = r["cpu_per_request"]
                        print(f"  {sc} round {rnd + 1} {name}: {r['good_rps']:,.0f} rps, front {c['front_us']} us, "
                              f"workers {c['workers_us']} us; other processes used {r['others_cores']} of "
                              f"{psutil.cpu_count()} cores", flush=True)
                    alone = appcost.run(WSGI_APPS[app], PAGES[sc][1], APP_ALONE_REQUESTS, tmpdir)
                    alone_runs.setdefault(sc, []).append(alone["us"])
                    print(f"  {sc} round {rnd + 1} the app alone (in-process loop): {alone['us']} us", flush=True)
            for (sc, name), rs in runs.items():
                best = max(rs, key=lambda r: r["good_rps"])
                results.setdefault(sc, {})[name] = dict(
                    best, page=PAGES[sc][1], rounds=len(rs), all_good_rps=[round(r["good_rps"], 1) for r in rs],
                    cpu_per_request_all=[r["cpu_per_request"] for r in rs],
                    others_cores_all=[r["others_cores"] for r in rs],
                    cpu_min={k: min(r["cpu_per_request"][k] for r in rs)
                             for k in ("front_us", "front_sys_us", "workers_us", "total_us")})
            for sc, us in alone_runs.items():
                results.setdefault(sc, {})[APP_ALONE] = {"page": PAGES[sc][1], "app_us": min(us), "app_us_all": us}
        finally:
            for server in live.values():
                server.stop()
                notes.extend(f"{server.cfg.key}: {note}" for note in server.notes)
                log = server.log_text()
                if re.search(r"Traceback|ERROR|CRITICAL", log):
                    lines = log.splitlines()
                    notes.append(f"{server.cfg.key}: errors in the server log, last lines:\n"
                                 + "\n".join("    | " + x for x in lines[-40:]))
        time.sleep(0.2)
    return results, notes


def servers_for(servers: list[str], explicit: bool, quick: bool) -> list[str]:
    """The servers the real pages run on: ours and the peers named in REAL_SERVERS, and
    experiments when named (in quick mode, unless named, only the first a2wsgi_mp variant)."""
    from .configs import EXPERIMENTS, REAL_SERVERS

    chosen = [s for s in servers if s in REAL_SERVERS or s in MP_NAMES or (explicit and s in EXPERIMENTS)]
    if quick and not explicit:
        mps = [s for s in chosen if s in MP_NAMES]
        chosen = [s for s in chosen if s not in MP_NAMES or s == mps[0]]
    return chosen
