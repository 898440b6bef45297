"""The elastic pool: between ``workers_min`` and ``workers_max`` workers, sized to the load.

The policy (docs/architecture.md compares it with uWSGI's cheaper subsystem and
php-fpm's ``pm = dynamic``):

- **Grow on queueing, at once.**  A request that has to wait for a worker is
  proof that every slot is busy.  The pool then starts as many workers as the
  queue needs (queued requests not yet covered by booting workers' slots), up
  to ``workers_max``.  No sampling interval: with a preloaded zygote a worker
  is a ``fork()`` away, so a burst gets its workers within milliseconds, where
  php-fpm spawns at most 1, 2, 4 … 32 per one-second tick and uWSGI waits
  ``cheaper-overload`` seconds.
- **Shrink on idleness, one worker at a time per worker.**  A worker above
  the minimum that ran no request for ``worker_idle_timeout`` seconds is
  retired (php-fpm's ``pm.process_idle_timeout``; uWSGI's ``cheaper-idle``),
  checked a few times per timeout.  An elastic pool hands requests to the most
  recently used idle worker first (LIFO), so a light load concentrates on few
  workers and the others really become idle.
- **Never below the minimum**, and retiring never interrupts a request: the
  worker leaves between requests, like any recycled worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .supervisor import Supervisor

logger = logging.getLogger("a2wsgi_mp.pool")


def grow(sup: "Supervisor", queued: int) -> int:
    """Start workers for ``queued`` waiting requests; how many were started."""
    cfg = sup.config
    if not cfg.elastic or sup.stopping or not sup.started or sup.hopeless:
        return 0
    live = [w for w in sup.workers.values() if w.state in ("booting", "ready") and w.replaces is None]
    booting = sum(len(w.slots) for w in live if w.state == "booting")
    needed = -(-(queued - booting) // cfg.threads)  # ceiling division
    count = max(0, min(needed, cfg.workers_max - len(live)))
    for _ in range(count):
        sup.spawn()
    if count:
        sup.counters["scaled_up"] += count
        logger.info("scaling up: %d requests queued, starting %d worker(s) (%d of at most %d)",
                    queued, count, len(live) + count, cfg.workers_max)
    return count


def shrink(sup: "Supervisor", now: float) -> int:
    """Retire workers above the minimum idle for ``worker_idle_timeout``; how many."""
    cfg = sup.config
    live = [w for w in sup.workers.values() if w.state in ("booting", "ready") and w.replaces is None]
    excess = len(live) - cfg.workers_min
    if excess <= 0:
        return 0
    idle = sorted((w for w in live if w.state == "ready" and not w.busy and w.replaced_by is None
                   and now - w.idle_since >= cfg.worker_idle_timeout), key=lambda w: w.idle_since)
    for worker in idle[:excess]:
        sup.counters["scaled_down"] += 1
        logger.info("scaling down: worker %s idle for %.0f s (%d of at least %d left)", worker.pid,
                    now - worker.idle_since, len(live) - 1, cfg.workers_min)
        live.remove(worker)
        sup.retire(worker, f"idle for {now - worker.idle_since:.0f} s")
    return min(excess, len(idle))


async def watch_idle(sup: "Supervisor") -> None:
    """Check for idle workers a few times per ``worker_idle_timeout``."""
    period = min(1.0, max(0.05, sup.config.worker_idle_timeout / 4))
    while not sup.stopping:
        await asyncio.sleep(period)
        shrink(sup, time.monotonic())
