"""Recycling: which worker retires between requests, and when.

A worker retires (leaves once idle, its replacement starting at once) when it
served ``max_requests`` requests (each worker's own limit, jittered so they do
not all go together), when its resident memory passed ``max_rss`` MiB, or when
it lived ``max_lifetime`` seconds.  The request count and the RSS a worker
reports with each response's last frame are checked as each request ends; a
watcher samples RSS (growth while idle) and age once a second.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from .handles import Worker, rss

if TYPE_CHECKING:
    from .supervisor import Supervisor


def after_request(sup: "Supervisor", worker: Worker) -> None:
    """Recycle ``worker`` (ready) if the request it just served used up its allowance."""
    if worker.max_requests and worker.requests >= worker.max_requests:
        sup.recycle(worker, f"served {worker.requests} requests")
    elif sup.config.max_rss and worker.rss > sup.config.max_rss * 1024 * 1024:
        sup.recycle(worker, rss_reason(sup, worker))


async def watch_resources(sup: "Supervisor") -> None:
    """Once a second: recycle ready workers grown past ``max_rss`` or older than ``max_lifetime``."""
    cfg = sup.config
    while not sup.stopping:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        for worker in list(sup.workers.values()):
            if worker.state != "ready" or worker.pid is None:
                continue
            if cfg.max_rss:  # (growth while idle: the worker reports after each request)
                worker.rss = rss(worker.pid)
                if worker.rss > cfg.max_rss * 1024 * 1024:
                    sup.recycle(worker, rss_reason(sup, worker))
                    continue
            if cfg.max_lifetime and now - worker.started > cfg.max_lifetime:
                sup.recycle(worker, f"lived {now - worker.started:.0f} s")


def rss_reason(sup: "Supervisor", worker: Worker) -> str:
    return f"RSS {worker.rss // (1024 * 1024)} MiB > {sup.config.max_rss} MiB"


def refresh_rss(sup: "Supervisor") -> None:
    """Sample every worker's RSS now (for the metrics)."""
    for worker in sup.workers.values():
        if worker.pid is not None:
            worker.rss = rss(worker.pid) or worker.rss
