"""Request timeouts by one periodic sweep, not a timer per request.

A timer per request (``loop.call_later`` at dispatch, ``cancel`` at the
response) costs a handle object, a heap push and a cancel on every request, to
serve a case that almost never happens.  Here dispatch stores a deadline in a
dict and the response deletes it; one callback, armed only while requests are
in flight, walks the dict every :attr:`Deadlines.tick` seconds.

A request times out between ``timeout`` and ``timeout + tick`` after its
dispatch, never before: the tick is a twentieth of the timeout, at most 0.5 s
(gunicorn's ``--timeout`` is no finer).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .exchange import Exchange

#: The sweep's period is ``timeout / TICKS_PER_TIMEOUT``, capped at :data:`MAX_TICK`.
TICKS_PER_TIMEOUT = 20
MAX_TICK = 0.5


class Deadlines:
    """Times out (:meth:`Exchange.time_out`) every exchange still pending past its deadline."""

    __slots__ = ("timeout", "tick", "_pending", "_loop", "_handle")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(MAX_TICK, timeout / TICKS_PER_TIMEOUT)
        self._pending: dict[Exchange, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def add(self, exchange: "Exchange") -> None:
        if self._handle is None:  # (re)arm on the running loop
            loop = self._loop = asyncio.get_running_loop()
            self._handle = loop.call_later(self.tick, self._sweep)
        else:
            loop = self._loop  # type: ignore[assignment]
        self._pending[exchange] = loop.time() + self.timeout

    def discard(self, exchange: "Exchange") -> None:
        self._pending.pop(exchange, None)

    @property
    def pending(self) -> int:
        """Requests whose clock runs."""
        return len(self._pending)

    @property
    def armed(self) -> bool:
        """Is a sweep scheduled (only while requests are pending)?"""
        return self._handle is not None

    def _sweep(self) -> None:
        self._handle = None
        assert self._loop is not None
        now = self._loop.time()
        late = [ex for ex, deadline in self._pending.items() if deadline <= now]
        for exchange in late:
            del self._pending[exchange]
            exchange.time_out()
        if self._pending:  # idle pools do not wake up
            self._handle = self._loop.call_later(self.tick, self._sweep)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._pending.clear()
