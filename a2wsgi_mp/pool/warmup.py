"""``reload_check``: a request a new worker must answer before it takes traffic.

A worker that imported the app is not yet a worker that serves it: Django
imports the URLconf and the views on the first request, so a reload whose view
module is broken "succeeds" and every request gets 500 afterwards.  With
``reload_check = "/healthz"`` each worker started after start-up (a reload's,
a replacement) first gets ``GET /healthz`` (``Host: localhost``) from the front,
on its own connection, before any client request; unless it answers with a
status below 400 within the timeout, it does not serve and, in a reload, the
old workers keep serving.  The request also warms the worker up: the modules
a first request imports are imported by then.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from ..environ import request_head
from ..ipc import protocol
from ..ipc.fds import FileHandoff
from .exchange import Exchange, Lost

if TYPE_CHECKING:
    from .worker import Slot

app_logger = logging.getLogger("a2wsgi_mp.wsgi")

#: The request id of a warm-up (the slot takes no other request meanwhile).
WARMUP_RID = 0


def scope_for(target: str) -> dict:
    """The ASGI scope of ``GET target`` from the front itself."""
    path, _, query = target.partition("?")
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode("latin-1", "replace"), "query_string": query.encode("latin-1"),
        "root_path": "", "headers": [(b"host", b"localhost"), (b"user-agent", b"a2wsgi-mp reload-check")],
        "server": ("localhost", 80), "client": ("127.0.0.1", 0),
    }


async def check(slot: "Slot", target: str, timeout: float) -> tuple[bool, str]:
    """Send ``GET target`` on ``slot``; (passed?, what happened: "answered 200 in 12 ms")."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    exchange = Exchange(WARMUP_RID, slot)
    slot.pipe.exchange = exchange  # (a slot the dispatcher has not been offered yet: no client request races it)
    status: int | None = None
    try:
        slot.pipe.send_request(WARMUP_RID, request_head(scope_for(target)), b"", 0)
        async with asyncio.timeout(timeout) if hasattr(asyncio, "timeout") else _Timeout(timeout):
            while True:  # (its events, to the last: finished may be set while some still queue)
                event = await exchange.next()
                if isinstance(event, protocol.Start):
                    status = event.status
                    if event.done:
                        break
                elif isinstance(event, FileHandoff):  # a file response: we do not send it
                    status = event.status
                    os.close(event.fd)
                    break
                elif isinstance(event, (protocol.End, protocol.Abort)):
                    break
                elif isinstance(event, Lost):
                    return False, f"the worker died ({event.reason})"
                elif isinstance(event, protocol.AppError):  # (its events come here, not to the supervisor)
                    app_logger.error("[worker %s] %s", slot.worker.pid, event.message)
    except (asyncio.TimeoutError, TimeoutError):
        return False, f"no answer within {timeout:g} s"
    finally:
        exchange.close()
        if slot.pipe.exchange is exchange:
            slot.pipe.exchange = None
    took = (loop.time() - began) * 1000
    if status is None:
        return False, f"no response ({took:.0f} ms)"
    return status < 400, f"answered {status} in {took:.0f} ms"


class _Timeout:
    """``asyncio.timeout`` for Python 3.10."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handle = asyncio.get_running_loop().call_later(self.delay, task.cancel)

    async def __aexit__(self, kind: object, exc: object, tb: object) -> bool:
        self._handle.cancel()
        if kind is asyncio.CancelledError:
            raise asyncio.TimeoutError
        return False
