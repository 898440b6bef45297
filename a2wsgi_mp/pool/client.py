"""The client's connection, under the ASGI app: aborting it.

ASGI has no message that drops a connection, yet a response that cannot end
cleanly must: one stuck past its deadline because the client reads nothing
waits in the server's ``send()`` for a socket that never drains, and a
response cut short must not look complete.  uvicorn's ``send`` is a bound
method of its request cycle, which holds the transport: aborting it closes the
socket with what is unsent, and uvicorn marks the cycle disconnected, which
makes a pending ``send()`` return.  Under a server that gives no such handle
nothing is done (the caller's other ways out still hold: the worker is freed
when the relay next looks, the client's own timeouts close the socket).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["abort_connection", "cut_response"]


def abort_connection(send: Callable[..., Any]) -> bool:
    """Abort the connection ``send`` writes to; False if the server gives no way to."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    if abort is None:
        return False
    abort()
    return True


async def cut_response(send: Callable[..., Any]) -> None:
    """End a started response that cannot be completed: the client sees it cut.

    After the abort the transport reports the connection lost on the loop's
    next turn; waiting for it lets uvicorn see a client that left rather than
    an app that "returned without completing the response" (an error log)."""
    if abort_connection(send):
        await asyncio.sleep(0)
