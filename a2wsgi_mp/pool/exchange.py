"""One request in flight between the front and a worker connection.

The connection's protocol pushes response events in; the request's coroutine
pulls them out.  A client that reads slower than the worker writes is absorbed
here (memory, then a temp file, up to ``response_buffer``) so the worker moves
on; past that the connection stops reading, the socket fills, and the worker
blocks in ``send``: the front never buffers a response without bound.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import deque
from typing import IO, TYPE_CHECKING, Any, Callable, Union

from ..ipc import protocol
from ..ipc.fds import FileHandoff
from .client import abort_connection

if TYPE_CHECKING:
    from ..ipc.pipe import FrontPipe
    from .deadlines import Deadlines
    from .worker import Slot

HIGH_WATER = 512 * 1024
LOW_WATER = 128 * 1024
#: The most response bytes one ASGI body message carries when chunks queue up.
COALESCE = 256 * 1024


class Lost:
    """The worker died (or was killed) with this request on it, on connection ``pipe``."""

    __slots__ = ("reason", "_pipe")

    def __init__(self, reason: str, pipe: "FrontPipe | None" = None) -> None:
        self.reason = reason
        self._pipe = pipe

    @property
    def unread(self) -> bool:
        """The connection ended with bytes we sent unread by the worker (ECONNRESET or EPIPE).

        Nothing is sent after a request until its worker answers, so if it had
        not answered at all, it never read the whole request: the app never ran,
        and the request may go to another worker.  Read when the relay handles
        this event, not when it is made: the exit report can come before the
        transport's own report of the reset, which is already on its way."""
        return self._pipe is not None and self._pipe.peer_reset


class TimedOut:
    """The request hit the pool's hard deadline."""

    __slots__ = ()


#: The one instance (it carries nothing).
TIMED_OUT = TimedOut()


Outcome = Union[protocol.Event, Lost, TimedOut]


class _Spilled:
    """``length`` bytes of a response that wait in the spill file, in order."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length


class Exchange:
    """One request's response on its way from a worker to the client.

    Up to :data:`HIGH_WATER` bytes wait in memory.  Beyond that, up to
    ``spill_limit`` more go to an anonymous temp file, so a worker whose client
    reads slowly still finishes and is released at once; only past that limit
    does the connection stop reading and the worker wait in ``send``.
    """

    __slots__ = (
        "rid", "slot", "_on_end", "_events", "_waiter", "_buffered", "_paused", "finished", "cancelled",
        "deadlines", "loop", "_spill_limit", "_spill_dir", "_spill", "_spilled", "_spill_read", "client",
        "relay",
    )

    def __init__(
        self,
        rid: int,
        slot: "Slot",
        on_end: "Callable[[Exchange, Outcome], None] | None" = None,
        spill_limit: int = 0,
        spill_dir: str | None = None,
        deadlines: "Deadlines | None" = None,
    ) -> None:
        self.rid = rid
        self.slot = slot
        #: Told once, when the worker is done with this request (see :meth:`_end`).
        self._on_end = on_end
        self._events: deque[Outcome | _Spilled] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._buffered = 0
        self._paused = False
        #: True once the worker is done with this request: its last frame came, it died, or the deadline passed.
        self.finished = False
        #: True once the front told the worker to stop; its remaining chunks are dropped.
        self.cancelled = False
        #: Where this request's deadline is kept while the worker has it (None: no timeout).
        self.deadlines = deadlines
        if deadlines is not None:
            deadlines.add(self)
        #: The running loop, if the caller knows it (each lookup is a getpid() on 3.11).
        self.loop: asyncio.AbstractEventLoop | None = None
        self._spill_limit = spill_limit
        self._spill_dir = spill_dir
        self._spill: IO[bytes] | None = None
        self._spilled = 0
        self._spill_read = 0
        #: The ASGI ``send`` of the request's client, set by its relay: aborted when
        #: the deadline passes while the relay is stuck writing to it.
        self.client: Callable[..., Any] | None = None
        #: The relay's task: cancelled instead when the server gives no way to abort.
        self.relay: asyncio.Task[Any] | None = None

    def feed(self, event: Outcome) -> None:
        if event.__class__ is protocol.Start:  # (first: nearly every response is one START)
            if event.done:
                self._end(event)
        elif isinstance(event, protocol.Body):
            if self.cancelled:
                return
            if self._buffered >= HIGH_WATER:
                if self._spilled + len(event.data) <= self._spill_limit:
                    self._spill_out(event.data)
                    self._wake()
                    return
                if not self._paused:  # past the spill limit too: let the worker wait
                    self._paused = True
                    self.slot.pipe.pause()
            self._buffered += len(event.data)
        elif isinstance(event, FileHandoff):
            if self.cancelled:  # nobody will send it: close the file, end the exchange
                os.close(event.fd)
                event = protocol.End(event.rid)
            self._end(event)
        elif isinstance(event, (protocol.End, protocol.Abort, Lost, TimedOut)) or (
            isinstance(event, (protocol.Start, protocol.Direct)) and event.done
        ):
            self._end(event)
        self._events.append(event)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self, outcome: Outcome) -> None:
        """The worker is done with this request -- its last frame, its death, or
        the deadline: tell the dispatcher now (once), even if the client has not
        read everything yet (the rest waits here)."""
        self.finished = True
        deadlines = self.deadlines
        if deadlines is not None:  # (stop_clock(), inline)
            deadlines.discard(self)
            self.deadlines = None
        if self._paused:  # nothing more comes for us: the connection is the next request's
            self._paused = False
            self.slot.pipe.resume()
        on_end = self._on_end
        if on_end is not None:
            self._on_end = None
            on_end(self, outcome)

    @property
    def pending(self) -> bool:
        """Events wait to be read."""
        return bool(self._events)

    def stop_clock(self) -> None:
        """No timeout for this request any more (it is over, or answered without its worker)."""
        if self.deadlines is not None:
            self.deadlines.discard(self)
            self.deadlines = None

    def _spill_out(self, data: bytes) -> None:
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(dir=self._spill_dir)
        # Page-cache writes of at most a frame (256 KiB): the loop does not wait for the disk.
        os.pwrite(self._spill.fileno(), data, self._spilled)
        self._spilled += len(data)
        self._events.append(_Spilled(len(data)))

    async def next(self) -> Outcome:
        while not self._events:
            loop = self.loop
            if loop is None:
                loop = self.loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.popleft()
        if isinstance(event, _Spilled):
            assert self._spill is not None
            data = os.pread(self._spill.fileno(), event.length, self._spill_read)
            self._spill_read += event.length
            return protocol.Body(self.rid, data)
        if isinstance(event, protocol.Body):
            events = self._events
            if events and events[0].__class__ is protocol.Body:
                event = self._coalesce(event.data)
            self._buffered -= len(event.data)
            if self._paused and self._buffered < LOW_WATER:
                self._paused = False
                self.slot.pipe.resume()
        return event

    def _coalesce(self, first: bytes) -> protocol.Body:
        """``first`` and the body chunks queued right behind it, as one chunk of
        up to :data:`COALESCE` bytes: one ASGI message and one socket write
        instead of one per worker frame (a 64 KiB-chunk download sends 4 at a
        time), at the price of one copy."""
        parts = [first]
        size = len(first)
        events = self._events
        while events and events[0].__class__ is protocol.Body and size + len(events[0].data) <= COALESCE:
            data = events.popleft().data  # type: ignore[union-attr]
            parts.append(data)
            size += len(data)
        return protocol.Body(self.rid, b"".join(parts) if len(parts) > 1 else first)

    def time_out(self) -> None:
        """The deadline passed with the worker still on the request.

        What waits here is dropped (the spill file freed) and :data:`TIMED_OUT`
        goes first, so the relay ends the request at its next look.  If it is
        not looking — it is stuck in ``send()`` to a client that reads nothing —
        the client's connection is aborted so that ``send()`` returns (under a
        server that gives no way to, the relay is cancelled): the deadline holds
        wherever the response is stuck.  The worker, stuck, is the dispatcher's
        to replace (:meth:`_end`)."""
        self.deadlines = None
        self._end(TIMED_OUT)
        self.cancel()
        self._events.appendleft(TIMED_OUT)
        self._wake()
        if self._waiter is None and self.client is not None and not abort_connection(self.client):
            if self.relay is not None:
                self.relay.cancel()

    def cancel(self) -> None:
        """The client is gone: drop what is queued and let the worker write on
        (into the void) until it notices."""
        self.cancelled = True
        self._events = deque(e for e in self._events if not isinstance(e, (protocol.Body, _Spilled)))
        self._buffered = 0
        if self._paused:
            self._paused = False
            self.slot.pipe.resume()
        self.close()

    def close(self) -> None:
        """Drop the spill file, if any (it has no name: closing frees it)."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None
