"""Request bodies that stop coming: 408 after ``body_timeout`` seconds without a read.

nginx's ``client_body_timeout`` (60 s by default) bounds the time between two
successive reads of a request body, not the whole upload, so a slow but live
link is never cut.  uvicorn has no such limit: a client that sends its head and
then trickles (or never sends) the body holds a coroutine and a connection for
ever.  The front reads every body before it takes a worker, so such a client
never costs a worker; this bounds what it costs the front.

As with :mod:`.deadlines`: no timer per request.  A read in progress is a dict
entry; one sweep, armed only while bodies are being read, cancels the requests
whose read is late, and :meth:`BodyReads.timed_out` tells the request the
cancellation was ours.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from ..types import Message

#: The sweep's period is a quarter of the timeout, at most this.
MAX_TICK = 1.0


class BodyReads:
    """The request tasks waiting for their next piece of body, and their deadlines."""

    __slots__ = ("timeout", "tick", "_reading", "_expired", "_loop", "_handle")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(MAX_TICK, timeout / 4)
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def begin(self, task: "asyncio.Task[Any]", loop: asyncio.AbstractEventLoop, since: float | None = None) -> None:
        """``task`` waits for a piece of its body: cancelled (see :meth:`timed_out`) past ``timeout`` s
        after ``since`` (the loop's time of its previous piece; default: now)."""
        self._reading[task] = (loop.time() if since is None else since) + self.timeout
        if self._handle is None:
            self._loop = loop
            self._handle = loop.call_later(self.tick, self._sweep)

    def end(self, task: "asyncio.Task[Any]") -> None:
        self._reading.pop(task, None)

    async def receive(self, receive: Callable[[], Awaitable[Message]], task: "asyncio.Task[Any]",
                      loop: asyncio.AbstractEventLoop, since: float | None = None) -> Message:
        """``await receive()`` between :meth:`begin` and :meth:`end`."""
        self.begin(task, loop, since)
        try:
            return await receive()
        finally:
            self.end(task)

    def timed_out(self, task: "asyncio.Task[Any]") -> bool:
        """Was ``task`` cancelled because its body read was late?  (Asked once.)"""
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _sweep(self) -> None:
        self._handle = None
        assert self._loop is not None
        now = self._loop.time()
        for task in [t for t, deadline in self._reading.items() if deadline <= now]:
            del self._reading[task]
            self._expired.add(task)
            task.cancel()
        if self._reading:
            self._handle = self._loop.call_later(self.tick, self._sweep)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._reading.clear()
