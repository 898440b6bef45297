"""``--reload``: replace the pool's workers when the app's files change.

The watching is watchfiles' (inotify/FSEvents through Rust, no polling loop of
ours).  A change reloads the pool exactly as SIGHUP does — fresh workers
re-import the app, each old one retires once its replacement is ready — while
the front, its listening socket and its connections stay.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence

from ..pool.app import WSGIPool

logger = logging.getLogger("a2wsgi_mp.reload")


async def watch(dirs: Sequence[str], pool: WSGIPool, stop: asyncio.Event) -> None:
    from watchfiles import PythonFilter, awatch

    logger.info("reload: watching %s for changes to Python files", ", ".join(dirs))
    try:
        async for changes in awatch(*dirs, watch_filter=PythonFilter(), stop_event=stop, debounce=400):
            if not pool.dispatcher.started or pool.dispatcher.supervisor.stopping:
                continue
            paths = sorted({_short(path) for _, path in changes})
            shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
            logger.info("reload: %s changed", shown)
            await pool.reload()
    except Exception:
        logger.exception("reload: the file watcher stopped; SIGHUP still reloads")


def _short(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
