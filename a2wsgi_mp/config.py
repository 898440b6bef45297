"""The pool's settings, shared by :class:`WSGIPool`, the CLI and the gunicorn worker."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields
from typing import Any

from .accesslog import DEFAULT_FORMAT
from .cgroup import available_cpus
from .environ import HEADER_MAPS
from .ipc.fds import MAX_FDS

#: How the zygote starts a worker (see :mod:`a2wsgi_mp.pool.zygote`).
START_METHODS = ("fork", "spawn")
#: The Linux CPU scheduling policy of the workers (see ``PoolConfig.worker_sched``).
WORKER_SCHEDS = ("normal", "batch", "idle", "autogroup")


def default_start_method() -> str:
    return "fork" if hasattr(os, "fork") and sys.platform != "darwin" else "spawn"


@dataclass
class PoolConfig:
    #: Worker processes; ``(min, max)`` makes the pool elastic (see workers_min/workers_max).
    workers: int | tuple[int, int] = 0  # 0: one per CPU this process may use (affinity, cgroup quota)
    #: Elastic pool: never fewer workers than this (0: ``workers``) ...
    workers_min: int = 0
    #: ... and never more (0: ``workers``); above the minimum, a worker idle for
    #: ``worker_idle_timeout`` seconds leaves, and queued requests start new ones.
    workers_max: int = 0
    #: Elastic pool: seconds a worker above the minimum may stay idle.
    worker_idle_timeout: float = 10.0
    #: Import the app once, in the zygote, and fork the workers from it
    #: (shared copy-on-write); a reload starts a fresh zygote with the new code.
    preload: bool = False
    #: Threads (each with its own connection) per worker process.
    threads: int = 1
    #: "fork" (a zygote forks workers) or "spawn" (fresh interpreters).
    start_method: str = ""
    #: Hard per-request deadline in seconds (504 and the worker replaced); 0 = off.
    timeout: float = 30.0
    #: Seconds in-flight requests get to finish on shutdown or reload.
    graceful_timeout: float = 30.0
    #: Recycle a worker after this many requests (0 = never), plus up to jitter.
    max_requests: int = 0
    max_requests_jitter: int = 0
    #: Recycle a worker whose RSS exceeds this many MiB, between requests (0 = off).
    max_rss: int = 0
    #: End a worker the moment its RSS passes this many MiB, mid-request: that
    #: request gets 502 and the log the worker's stacks (0 = off).  The worker
    #: samples its own RSS every 50 ms.  Set it above ``max_rss``.
    max_rss_hard: int = 0
    #: Recycle a worker older than this many seconds, between requests (0 = off).
    max_lifetime: float = 0.0
    #: Requests that may wait for a worker; beyond it, 503 at once.
    backlog: int = 2048
    #: A request that waited this long for a worker gets 503 (0 = wait for ever).
    queue_timeout: float = 0.0
    #: Bodies up to this size stay in memory; larger ones go to a temp file.
    spool_threshold: int = 1024 * 1024
    #: Larger bodies get 413 (None = unlimited).
    max_body_size: int | None = None
    #: Seconds a client may take between two reads of its request body (nginx's
    #: ``client_body_timeout``, 60 s): a body trickled slower gets 408 (0 = off).
    body_timeout: float = 60.0
    #: Bytes of a response the front takes off a worker whose client reads
    #: slowly (beyond 512 KiB in memory, in an anonymous temp file), so the
    #: worker is free for the next request; 0 = the worker waits for the client.
    response_buffer: int = 32 * 1024 * 1024
    #: Where spooled bodies go (default: the system temp directory).
    spool_dir: str | None = None
    #: Seconds a worker may take to load the app.
    boot_timeout: float = 60.0
    #: Serve Prometheus metrics at this path of the public listener (None = off;
    #: the admin listener, ``admin_socket``/``admin_bind``, is the better place).
    metrics_path: str | None = None
    #: The admin listener (``/metrics``, ``/status``; read by ``a2wsgi-mp status``):
    #: a Unix socket path (``{pid}`` in it: the front's pid), and/or a ``HOST:PORT``
    #: that is not the public one.
    admin_socket: str | None = None
    admin_bind: str | None = None
    #: One access-log line per request (logger ``a2wsgi_mp.access``), refusals included,
    #: in gunicorn's ``access_log_format`` with our atoms (see :mod:`a2wsgi_mp.accesslog`).
    access_log: bool = False
    access_log_format: str = DEFAULT_FORMAT
    #: Answer health checks at this path in the front (None = off): 200 while a
    #: worker is ready and the pool is not draining, else 503; never a worker's request.
    health_path: str | None = None
    #: How bodies move between front and workers: "pipe" (the socketpair) or "shm"
    #: (a shared-memory ring per slot; control frames stay on the socketpair).
    ipc: str = "pipe"
    #: After the 500 (or the cut response) of a request whose app raised, raise
    #: :class:`~a2wsgi_mp.RemoteAppError` (carrying the worker's traceback) to
    #: the ASGI server, as the in-process ``WSGIMiddleware`` re-raises the app's
    #: exception.  Off: the traceback is only logged (``a2wsgi_mp.wsgi``).
    raise_app_errors: bool = False
    #: The hooks module (``pkg.hooks`` or a ``.py`` path): ``post_fork``,
    #: ``post_worker_init``, ``worker_exit`` run in each worker; ``child_exit``,
    #: ``when_ready``, ``on_reload`` in the front (see :mod:`a2wsgi_mp.hooks`).
    hooks: str | None = None
    #: Only these hooks of the module (None: all); the gunicorn worker runs a
    #: gunicorn config's ``post_fork``, ``worker_exit``, ``child_exit`` this way.
    hook_names: tuple[str, ...] | None = None
    #: A path (``/healthz``) each worker started after start-up (a reload's, a
    #: replacement) must answer below 400 before it serves: in a reload, the
    #: old workers keep serving unless the new ones pass (None = no check).
    reload_check: str | None = None
    #: Header names with underscores (``X_Forwarded_For``), which would land on the
    #: same environ key as the dashed name: "drop" (gunicorn's and nginx's default),
    #: "refuse" (400) or "dangerous" (kept).  Applied in the worker's environ.
    header_map: str = "drop"
    #: Under the CLI and the gunicorn worker (a2wsgi_mp's own uvicorn protocol,
    #: httptools): a request without a body skips the ASGI machinery and a complete
    #: response leaves in one write (``pool/fastpath.py``); everything else takes the
    #: ASGI path.  No effect under other servers.  False keeps every request on ASGI.
    fast_path: bool = True
    #: Under uvicorn's httptools protocol on plain TCP or a Unix socket (the CLI,
    #: the gunicorn worker): a worker whose response streams writes the body to
    #: the client itself, handing the rest back to the front when the client stops
    #: reading (``pool/direct.py``, ``workers/direct.py``).  False: the front relays.
    direct_stream: bool = True
    #: The workers' CPU scheduling policy (Linux): "normal" (SCHED_OTHER, the default),
    #: "batch" (SCHED_BATCH) or "idle" (SCHED_IDLE: the workers only get CPU time no
    #: normal task wants, so the front — and anything else on the machine — wins every
    #: wake-up: an async route served by the front keeps its latency beside CPU-bound
    #: workers, at a cost in throughput when the front is busy; see docs/performance.md) or
    #: "autogroup" (the zygote starts a session of its own, so the workers share a Linux
    #: autogroup apart from the front's, and that group's nice is 19: the front wins the CPU
    #: against them, and so does every other session's work; only where autogroup applies:
    #: kernel.sched_autogroup_enabled=1 and the root cpu cgroup, not in a container or a
    #: systemd service with the cpu controller; see docs/performance.md).
    #: Set in each worker as it starts; where refused, the worker logs it and serves as normal.
    worker_sched: str = "normal"

    def __post_init__(self) -> None:
        if isinstance(self.workers, (tuple, list)):
            if len(self.workers) != 2:
                raise ValueError("workers must be a number or a (min, max) pair")
            self.workers_min, self.workers_max = (int(n) for n in self.workers)
            self.workers = self.workers_min
        #: Why the pool has as many workers as it has, when it was not told (logged at start-up).
        self.workers_source = ""
        if not self.workers and not self.workers_min:
            self.workers, why = available_cpus()
            self.workers_source = f"one per CPU this process may use: {why}"
        if not self.workers:
            self.workers = self.workers_min
        self.workers_min = self.workers_min or min(self.workers, self.workers_max or self.workers)
        self.workers_max = self.workers_max or max(self.workers, self.workers_min)
        if not self.workers_min <= self.workers_max:
            raise ValueError(f"workers_min ({self.workers_min}) must not exceed workers_max ({self.workers_max})")
        # The pool starts with the minimum (or ``workers``, if it lies within the range).
        self.workers = min(max(self.workers, self.workers_min), self.workers_max)
        if not self.start_method:
            self.start_method = default_start_method()
        if self.start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS}, not {self.start_method!r}")
        for name in ("workers", "workers_min", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.threads > MAX_FDS:  # each thread's connection travels in one SCM_RIGHTS message
            raise ValueError(f"threads must be at most {MAX_FDS}")
        for name in ("timeout", "graceful_timeout", "max_requests", "max_requests_jitter", "max_rss", "max_rss_hard",
                     "response_buffer", "max_lifetime", "worker_idle_timeout", "backlog", "queue_timeout",
                     "spool_threshold", "boot_timeout", "body_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_body_size is not None and self.max_body_size < 0:
            raise ValueError("max_body_size must not be negative")
        if self.preload and self.start_method == "spawn":
            raise ValueError("preload needs start_method='fork': workers are forked from the preloaded zygote")
        if self.ipc not in ("pipe", "shm"):
            raise ValueError(f"ipc must be 'pipe' or 'shm', not {self.ipc!r}")
        if self.reload_check is not None and not str(self.reload_check).startswith("/"):
            raise ValueError(f"reload_check must be a path such as '/healthz', not {self.reload_check!r}")
        if self.hooks is not None and not isinstance(self.hooks, str):
            raise ValueError("hooks must name a module ('myproject.pool_hooks') or a .py file: every worker "
                             "process imports it")
        if self.worker_sched not in WORKER_SCHEDS:
            raise ValueError(f"worker_sched must be one of {', '.join(WORKER_SCHEDS)}, not {self.worker_sched!r}")
        if self.header_map not in HEADER_MAPS:
            raise ValueError(f"header_map must be 'drop', 'refuse' or 'dangerous', not {self.header_map!r}")

    @property
    def elastic(self) -> bool:
        return self.workers_min < self.workers_max

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> PoolConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown WSGIPool option(s): {', '.join(unknown)}")
        return cls(**kwargs)
