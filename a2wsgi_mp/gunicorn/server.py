"""The uvicorn server a gunicorn worker runs (see :mod:`a2wsgi_mp.gunicorn.worker`).

Its own module because it only changes how uvicorn's server stops (the
worker owns signals; the listeners drain briefly), which the worker class's
life cycle code need not spell out.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from uvicorn.server import Server as UvicornServer

__all__ = ["DrainingServer"]


class DrainingServer(UvicornServer):
    """uvicorn's server, minus its own signal handling (the worker owns signals),
    and with a short pause between closing the listeners and closing idle
    connections, so a connection accepted just before the stop gets to send its
    request instead of being closed unanswered (the other workers, or the
    replacements started by a HUP, keep accepting on the shared socket)."""

    drain_pause = 0.2

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass

    async def shutdown(self, sockets: Any = None) -> None:
        for server in self.servers:
            server.close()
        if not self.force_exit and self.drain_pause:
            await asyncio.sleep(self.drain_pause)
        # Not ``sockets``: closing the servers closed those descriptors already,
        # and by now their numbers may belong to other files.
        await super().shutdown(sockets=None)
