"""Which servers run which scenarios, and the command line of each configuration."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
PY = sys.executable
MiB = 1024 * 1024

# --- configurations -----------------------------------------------------------

#: a2wsgi_mp configurations: (server name, extra CLI args, extra WSGIPool kwargs).
#: In quick mode only the first runs every scenario; the others get P1, P2, P4, P5, P6
#: (where the transport matters most), to stay within 2 minutes.
MP_VARIANTS: list[tuple[str, list[str], dict[str, Any]]] = [
    ("a2wsgi_mp", [], {}),
    ("a2wsgi_mp-shm", ["--ipc", "shm"], {"ipc": "shm"}),
    # The 0.2 path (issue 22's "before", in the same run): every request through ASGI
    # (no fast path), every response byte relayed by the front (no direct stream).
    ("a2wsgi_mp-relay", ["--no-fast-path", "--no-direct-stream"], {"fast_path": False, "direct_stream": False}),
    # a2wsgi_mp as another source tree has it (``--baseline TREE``): a change's before and after in one run.
    ("a2wsgi_mp-baseline", [], {}),
]
MP_NAMES = [name for name, _, _ in MP_VARIANTS]
PEERS = ["a2wsgi", "gunicorn-sync", "gunicorn-gthread", "granian"]
#: Full mode only (unless named): bare uvicorn, and a2wsgi in ONE uvicorn process (the brief's peer figures).
#: a2wsgi_mp-2f: ``--fronts 2`` (the workers split between the two fronts), P1 only.
REFERENCES = ["uvicorn-raw", "a2wsgi-1p", "a2wsgi_mp-2f"]
#: Experiments, run only when named: the pool behind a front without ASGI (benchmarks/lean_front.py);
#: workers doing their own HTTP in Python with no front, a floor and not a server (benchmarks/worker_http.py);
#: a separate front at its floor, 1 or 2 requests in flight per worker (benchmarks/split_front.py).
EXPERIMENTS = ["a2wsgi_mp-baseline", "a2wsgi_mp-lean", "py-worker-http", "py-split-front", "py-split-front-d1"]
#: The floors: run on P1 and the real pages only (bodies in memory, a slow client holds a process).
FLOORS = ("py-worker-http", "py-split-front", "py-split-front-d1")
VARIANT_ENV: dict[str, dict[str, str]] = {}
#: The source tree a server runs from when not this one (``--baseline TREE`` sets a2wsgi_mp-baseline's).
TREES: dict[str, str] = {}
ALL_SERVERS = MP_NAMES + PEERS + REFERENCES + [e for e in EXPERIMENTS if e not in MP_NAMES]

SCENARIOS = ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "R1", "R2", "R3"]
#: Real pages (benchmarks/realpages.py): every server started at once, interleaved rounds.
#: Full mode runs them; quick mode only when named with --only.
REAL_PAGES = ["R1", "R2", "R3"]
#: The servers of the real-page scenarios (each with 2 processes of 1 thread, a2wsgi with its threads).
REAL_SERVERS = ["a2wsgi_mp", "gunicorn-sync", "granian", "a2wsgi"]
#: Order of scenarios sharing one server instance; P4 (slow clients) last, so
#: whatever it leaves behind cannot spoil the others.
SESSION_ORDER = ["P1", "P2", "P7", "P8", "P5", "P6", "P4", "P3"]

MODES = {
    "quick": dict(duration=3.0, short=2.0, idle=1.0, settle=0.0, body=256 * MiB, slow_clients=100, drain=1.0,
                  conns=32, repeat=1, ramp=0.5),
    "full": dict(duration=6.0, short=5.0, idle=3.0, settle=15.0, body=1024 * MiB, slow_clients=2000, drain=3.0,
                 conns=32, repeat=2, ramp=2.0),
}


@dataclass(frozen=True)
class Config:
    server: str
    workers: int
    threads: int
    app: str = "wsgi"  # a key of WSGI_APPS, or "router" (P3) or "raw"

    @property
    def key(self) -> str:
        return f"{self.server} w={self.workers} t={self.threads} {self.app}"


#: The real pages' results key of the app measured alone (benchmarks/appcost.py), beside the servers'.
APP_ALONE = "app alone"

#: The WSGI app each Config.app names (a module:attribute every server can load).
WSGI_APPS = {
    "wsgi": "benchmarks.apps:app",
    "django": "benchmarks.django_site:application",  # R1, R2
    "flask": "benchmarks.flask_site:app",  # R3
}


def granian_available() -> bool:
    return importlib.util.find_spec("granian") is not None


def mp_command() -> list[str]:
    exe = shutil.which("a2wsgi-mp")
    return [exe] if exe else [PY, "-m", "a2wsgi_mp"]


def server_command(cfg: Config, port: int) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment for one configuration."""
    host, p = "127.0.0.1", str(port)
    env: dict[str, str] = dict(VARIANT_ENV.get(cfg.server, {}))
    target = WSGI_APPS.get(cfg.app, WSGI_APPS["wsgi"])
    uvicorn_fast = ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]
    if cfg.app == "router":
        backend = "a2wsgi" if cfg.server == "a2wsgi" else "a2wsgi_mp"
        env.update(BENCH_BACKEND=backend, BENCH_WORKERS=str(cfg.workers), BENCH_THREADS=str(cfg.threads))
        for name, _, kwargs in MP_VARIANTS:
            if name == cfg.server:
                env["BENCH_MP_OPTIONS"] = json.dumps(kwargs)
        # One event-loop process in front: the point is what the WSGI work does to its loop.
        return ([PY, "-m", "uvicorn", "--factory", "benchmarks.apps:make_router", "--host", host,
                 "--port", p, "--workers", "1", *uvicorn_fast], env)
    for name, extra, _ in MP_VARIANTS:
        if cfg.server == name:
            return ([*mp_command(), target, "--host", host, "--port", p,
                     "--workers", str(cfg.workers), "--threads", str(cfg.threads),
                     "--log-level", "warning", "--no-access-log", *extra], env)
    if cfg.server == "py-worker-http":
        return ([PY, "-m", "benchmarks.worker_http", target, "--host", host, "--port", p,
                 "--workers", str(cfg.workers)], env)
    if cfg.server in ("py-split-front", "py-split-front-d1"):
        return ([PY, "-m", "benchmarks.split_front", target, "--host", host, "--port", p,
                 "--workers", str(cfg.workers), "--depth", "1" if cfg.server.endswith("-d1") else "2"], env)
    if cfg.server == "a2wsgi_mp-lean":
        return ([PY, "-m", "benchmarks.lean_front", target, "--host", host, "--port", p,
                 "--workers", str(cfg.workers)], env)
    if cfg.server == "a2wsgi_mp-2f":
        return ([*mp_command(), target, "--host", host, "--port", p, "--fronts", "2",
                 "--workers", str(cfg.workers), "--threads", str(cfg.threads),
                 "--log-level", "warning", "--no-access-log"], env)
    if cfg.server in ("a2wsgi", "a2wsgi-1p"):
        env.update(BENCH_THREADS=str(cfg.threads), BENCH_WSGI_APP=target)
        return ([PY, "-m", "uvicorn", "--factory", "benchmarks.apps:make_a2wsgi", "--host", host,
                 "--port", p, "--workers", str(cfg.workers), *uvicorn_fast], env)
    if cfg.server == "gunicorn-sync":
        return ([PY, "-m", "gunicorn", "-k", "sync", "-w", str(cfg.workers), "-b", f"{host}:{p}",
                 "--log-level", "warning", target], env)
    if cfg.server == "gunicorn-gthread":
        return ([PY, "-m", "gunicorn", "-k", "gthread", "-w", str(cfg.workers), "--threads",
                 str(cfg.threads), "-b", f"{host}:{p}", "--log-level", "warning", target], env)
    if cfg.server == "granian":
        return ([PY, "-m", "granian", "--interface", "wsgi", "--host", host, "--port", p,
                 "--workers", str(cfg.workers), "--blocking-threads", str(cfg.threads),
                 "--log-level", "warning", "--no-access-log", target], env)
    if cfg.server == "uvicorn-raw":
        return ([PY, "-m", "uvicorn", "benchmarks.apps:raw_hello", "--host", host, "--port", p,
                 "--workers", str(cfg.workers), *uvicorn_fast], env)
    raise ValueError(cfg.server)


def base_config(server: str, workers: int, threads: int) -> Config:
    """The configuration a server runs P1/P2/P4/P5/P6 in."""
    if server in MP_NAMES or server in ("gunicorn-sync", "a2wsgi_mp-2f") or server in FLOORS:
        return Config(server, workers, 1)  # one thread per process, like gunicorn sync
    if server == "uvicorn-raw":
        return Config(server, 1, 1, "raw")  # the brief's reference: one uvicorn process
    if server == "a2wsgi-1p":
        return Config(server, 1, threads)
    return Config(server, workers, threads)


def plan(scenarios: list[str], servers: list[str], workers: int, threads: int,
         quick: bool = False) -> dict[Config, list[str]]:
    """Which scenarios run on which server configuration."""
    jobs: dict[Config, list[str]] = {}
    first_mp = next((s for s in servers if s in MP_NAMES), None)

    def add(cfg: Config, scenario: str) -> None:
        if quick and cfg.server in MP_NAMES and cfg.server != first_mp and scenario in ("P3", "P7", "P8"):
            return
        if cfg.server in servers and scenario in scenarios:
            jobs.setdefault(cfg, []).append(scenario)

    for s in servers:
        base = base_config(s, workers, threads)
        if s in REFERENCES or s in FLOORS:
            add(base, "P1")
            if s == "a2wsgi-1p":
                add(base, "P2")
            continue
        for sc in ("P1", "P2", "P4", "P5", "P6"):
            add(base, sc)
        if s in MP_NAMES:
            add(Config(s, workers, threads), "P7")
            add(Config(s, workers, 1, "router"), "P3")
        else:
            add(base, "P7")
        if s == "a2wsgi":
            add(Config(s, 1, threads, "router"), "P3")
        if s in MP_NAMES or s == "gunicorn-sync":
            for w in (1, 2, 4):
                add(Config(s, w, 1), "P8")
    for cfg in jobs:
        jobs[cfg].sort(key=SESSION_ORDER.index)
    return jobs
