"""Reloading a preloaded pool: the new code is imported by a new zygote first.

With ``preload`` the workers fork from a zygote that imported the app once, so
re-forking from it would serve the old code (gunicorn ``--preload``'s
limitation).  A reload therefore starts a *fresh* zygote, which imports the
code as it is on disk now.  Only once it is READY does it become the zygote
workers come from; the supervisor then replaces every worker from it, as in
any reload.  If it cannot import the app, the error is logged and nothing
changes: the old zygote and its workers serve on.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..loader import describe

if TYPE_CHECKING:
    from .launcher import Launcher
    from .supervisor import Supervisor

logger = logging.getLogger("a2wsgi_mp.pool")


async def fresh_zygote(sup: "Supervisor") -> "Launcher | None":
    """A new zygote with the app preloaded from disk; None if it failed (logged)."""
    if sup.reloading:
        logger.warning("reload ignored: a reload is under way")
        return None
    sup.reloading = True
    try:
        fresh = sup.new_launcher()
        started = time.monotonic()
        try:
            await fresh.start()
        except Exception as exc:  # PreloadFailed, or the zygote could not even start
            logger.error("reload failed: could not preload %s; the old workers keep serving:\n%s",
                         describe(sup.app_ref), str(exc).rstrip() or type(exc).__name__)
            await fresh.stop()
            return None
        if sup.stopping:
            await fresh.stop()
            return None
        logger.info("reload: new code preloaded in %.0f ms (zygote %s)", (time.monotonic() - started) * 1000,
                    fresh.pid)
        return fresh
    finally:
        sup.reloading = False
