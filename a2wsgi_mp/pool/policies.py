"""The pool's policies as pure functions: given what is, decide what should be.

Nothing here starts, stops or signals anything; the supervisor
(:mod:`.supervisor`) asks and acts.  That keeps each rule readable on its own
and testable with plain objects.

**Recycling.**  A worker retires (leaves once idle, its replacement starting
at once) when it served ``max_requests`` requests (each worker's own limit,
jittered so they do not all go together), when its resident memory passed
``max_rss`` MiB, or when it lived ``max_lifetime`` seconds.

**Elastic sizing** (docs/architecture.md compares it with uWSGI's cheaper
subsystem and php-fpm's ``pm = dynamic``):

- *Grow on queueing, at once.*  A request that has to wait for a worker is
  proof that every slot is busy.  The pool then starts as many workers as the
  queue needs (queued requests not yet covered by booting workers' slots), up
  to ``workers_max``.  No sampling interval: with a preloaded zygote a worker
  is a ``fork()`` away, so a burst gets its workers within milliseconds, where
  php-fpm spawns at most 1, 2, 4 … 32 per one-second tick and uWSGI waits
  ``cheaper-overload`` seconds.
- *Shrink on idleness.*  A worker above the minimum that ran no request for
  ``worker_idle_timeout`` seconds is retired (php-fpm's
  ``pm.process_idle_timeout``; uWSGI's ``cheaper-idle``), checked a few times
  per timeout.  An elastic pool hands requests to the most recently used idle
  worker first (LIFO), so a light load concentrates on few workers and the
  others really become idle.
- *Never below the minimum*, and retiring never interrupts a request: the
  worker leaves between requests, like any recycled worker.

**Back-off.**  A worker that cannot load the app is retried after 0.1 s,
doubling per consecutive failure up to 10 s; the same figure is the 503's
``Retry-After``.
"""

from __future__ import annotations

import random
from typing import Iterable

from ..config import PoolConfig
from .worker import State, Worker

MIB = 1024 * 1024
BACKOFF_MIN, BACKOFF_MAX = 0.1, 10.0


def request_limit(config: PoolConfig, rng: random.Random | None = None) -> int:
    """A new worker's ``max_requests``, jittered (0: no limit)."""
    if not config.max_requests:
        return 0
    jitter = (rng or random).randint(0, config.max_requests_jitter)
    return config.max_requests + jitter


def recycle_reason(worker: Worker, config: PoolConfig, now: float) -> str | None:
    """Why ``worker`` should retire now, or None if it serves on."""
    if worker.max_requests and worker.requests >= worker.max_requests:
        return f"served {worker.requests} requests"
    if config.max_rss and worker.rss > config.max_rss * MIB:
        return f"RSS {worker.rss // MIB} MiB > {config.max_rss} MiB"
    if config.max_lifetime and now - worker.started > config.max_lifetime:
        return f"lived {now - worker.started:.0f} s"
    return None


def backoff(failures: int) -> float:
    """Seconds before the next boot attempt after ``failures`` consecutive boot failures."""
    return min(BACKOFF_MAX, BACKOFF_MIN * 2 ** max(0, failures - 1))


def growth(config: PoolConfig, target: int, booting_slots: int, queued: int) -> int:
    """How many workers an elastic pool of ``target`` workers adds for ``queued`` waiting requests."""
    needed = -(-(queued - booting_slots) // config.threads)  # ceiling division
    return max(0, min(needed, config.workers_max - target))


def idle_surplus(config: PoolConfig, target: int, workers: Iterable[Worker], now: float) -> list[Worker]:
    """The workers an elastic pool of ``target`` retires for idleness, longest idle first."""
    excess = target - config.workers_min
    if excess <= 0:
        return []
    idle = sorted((w for w in workers if w.state is State.READY and not w.busy
                   and now - w.idle_since >= config.worker_idle_timeout), key=lambda w: w.idle_since)
    return idle[:excess]


def tick_period(config: PoolConfig) -> float:
    """How often the supervisor re-checks the pool when nothing happens: a few times per idle timeout."""
    if config.elastic:
        return min(1.0, max(0.05, config.worker_idle_timeout / 4))
    return 1.0
