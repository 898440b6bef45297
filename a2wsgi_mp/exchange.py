"""One request in flight between the front and a worker connection.

The connection's protocol pushes response events in; the request's coroutine
pulls them out.  When more than :data:`HIGH_WATER` bytes wait here (the client
reads slower than the worker writes) the connection stops reading, the socket
fills, and the worker blocks in ``send``: the front never buffers a response
without bound.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from typing import TYPE_CHECKING, Union

from .ipc import protocol
from .ipc.fds import FileHandoff

if TYPE_CHECKING:
    from .handles import Slot

HIGH_WATER = 512 * 1024
LOW_WATER = 128 * 1024


class Lost:
    """The worker died (or was killed) with this request on it."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class TimedOut:
    """The request hit the pool's hard deadline."""

    __slots__ = ()


Outcome = Union[protocol.Event, Lost, TimedOut]


class Exchange:
    __slots__ = ("rid", "slot", "_events", "_waiter", "_buffered", "_paused", "finished", "cancelled", "timer")

    def __init__(self, rid: int, slot: "Slot") -> None:
        self.rid = rid
        self.slot = slot
        self._events: deque[Outcome] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._buffered = 0
        self._paused = False
        #: True once the worker sent its last frame for this request (or is gone).
        self.finished = False
        #: True once the front told the worker to stop; its remaining chunks are dropped.
        self.cancelled = False
        self.timer: asyncio.TimerHandle | None = None

    def feed(self, event: Outcome) -> None:
        if isinstance(event, protocol.Body):
            if self.cancelled:
                return
            self._buffered += len(event.data)
            if self._buffered > HIGH_WATER and not self._paused:
                self._paused = True
                self.slot.pipe.pause()
        elif isinstance(event, FileHandoff):
            self.finished = True
            if self.cancelled:  # nobody will send it: close the file, end the exchange
                os.close(event.fd)
                event = protocol.End(event.rid)
        elif isinstance(event, (protocol.End, protocol.Abort, Lost)) or (
            isinstance(event, protocol.Start) and event.done
        ):
            self.finished = True
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> Outcome:
        while not self._events:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.popleft()
        if isinstance(event, protocol.Body):
            self._buffered -= len(event.data)
            if self._paused and self._buffered < LOW_WATER:
                self._paused = False
                self.slot.pipe.resume()
        return event

    def cancel(self) -> None:
        """The client is gone: drop what is queued and let the worker write on
        (into the void) until it notices."""
        self.cancelled = True
        self._events = deque(e for e in self._events if not isinstance(e, protocol.Body))
        self._buffered = 0
        if self._paused:
            self._paused = False
            self.slot.pipe.resume()
        self._buffered = 0
        if self._paused:
            self._paused = False
            self.slot.pipe.resume()
