"""The dispatcher: hands idle worker slots to requests, first come first served.

Admission lives here (a bounded queue, an optional queue timeout, 503 with
``Retry-After`` beyond them), and so does the link between a slot and its
request: :meth:`Dispatcher.begin` binds an :class:`~a2wsgi_mp.pool.exchange.Exchange`
to the slot's connection, and :meth:`Dispatcher._end` -- which the exchange calls
once, when the worker is done with it -- is the one place that unbinds it and
gives the slot back.  Keeping the processes alive is the
:class:`~a2wsgi_mp.pool.supervisor.Supervisor`'s job.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from ..config import PoolConfig
from ..loader import AppRef, describe
from .deadlines import Deadlines
from .exchange import Exchange, Lost, Outcome, TimedOut
from .supervisor import BootFailed, Supervisor
from .worker import Slot, State, Worker

#: Looked up per queued request: a module global costs a third of an Enum member's class lookup.
DEAD = State.DEAD

__all__ = ["BootFailed", "Dispatcher", "Slot", "Unavailable", "Worker"]


class Unavailable(Exception):
    """No worker can take the request: 503.  ``retry_after`` in seconds."""

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Dispatcher:
    def __init__(self, app_ref: AppRef, config: PoolConfig, **supervisor_options: Any) -> None:
        """``supervisor_options``: the :class:`Supervisor`'s clock, zygote and process handle (for tests)."""
        if config.preload and not isinstance(app_ref, str):
            raise ValueError(f"preload needs the app as an import string such as 'package.module:app' (the "
                             f"zygote imports it, never the front); {describe(app_ref)} is loaded already")
        self.app_ref = app_ref
        self.config = config
        self.counters = {"served": 0, "502": 0, "503": 0, "504": 0, "recycled": 0, "respawned": 0, "killed": 0,
                         "scaled_up": 0, "scaled_down": 0, "direct": 0, "handed_over": 0}
        self._idle: deque[Slot] = deque()
        self._waiters: deque[asyncio.Future[Slot]] = deque()
        self._offering: list[Slot] | None = None  # slots to offer, while _offer runs (see there)
        self._next_rid = 0
        #: Seconds worker threads spent on requests, dead workers included (utilisation).
        self.busy_seconds = 0.0
        #: An elastic pool reuses the most recently used idle slot (LIFO), so
        #: under a light load the other workers stay idle and can be retired.
        self._lifo = config.elastic
        #: The loop the pool runs on, looked up once (each lookup is a getpid() on 3.11).
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Per-request timeouts, swept periodically (no timer per request).
        self.deadlines = Deadlines(config.timeout) if config.timeout else None
        self.started = False
        self.supervisor = Supervisor(app_ref, config, self.counters, self._offer, self._withdraw, self._lost,
                                     self._fail_waiters, **supervisor_options)

    @property
    def workers(self) -> dict[int, Worker]:
        return self.supervisor.workers

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the workers; return when all are ready, raise BootFailed if none can be."""
        if not self.started:
            self.started = True
            self.loop = asyncio.get_running_loop()
            await self.supervisor.start()

    async def stop(self, graceful_timeout: float | None = None) -> None:
        """Stop taking work, let in-flight requests finish, then end every process."""
        if self.supervisor.stopping or not self.started:
            return
        self.supervisor.stopping = True
        self._fail_waiters(Unavailable("shutting down"))
        timeout = self.config.graceful_timeout if graceful_timeout is None else graceful_timeout
        await self.supervisor.stop(timeout)
        if self.deadlines is not None:
            self.deadlines.close()

    async def reload(self) -> None:
        """New workers with the (re-imported) app; returns once they are on their way."""
        await self.supervisor.reload()

    # ------------------------------------------------------------ dispatch

    def take_idle(self) -> Slot | None:
        """An idle slot if one is free now and nobody queues before us."""
        if self._idle and not self._waiters:
            return self._idle.pop() if self._lifo else self._idle.popleft()
        return None

    def take_or_wait(self, waiter: Any) -> Slot | None:
        """An idle slot now, or None and ``waiter`` queued FIFO: the fast paths' stand-in for
        :meth:`acquire`'s future (``set_result(slot)``, ``set_exception(Unavailable)``), no
        task.  Its caller checked the admission :meth:`acquire` checks (``fastpath.eligible``)."""
        idle = self._idle
        if idle and not self._waiters:  # (take_idle(), inline: every fast request)
            return idle.pop() if self._lifo else idle.popleft()
        self._waiters.append(waiter)
        if self._lifo:  # (an elastic pool: it may grow)
            self.supervisor.queued(len(self._waiters))
        return None

    def give_back(self, slot: Slot) -> None:
        """A slot handed to a queued request that no longer wants it (its client left, it gave up)."""
        slot.reserved = False
        if self.supervisor.unused(slot):
            self._offer(slot)

    async def acquire(self) -> Slot:
        """An idle slot, FIFO among waiters; Unavailable (503) when there is none to wait for.

        (One coroutine, loop included: under load every request queues here.)"""
        while True:
            if self._idle and not self._waiters:
                return self._idle.pop() if self._lifo else self._idle.popleft()
            if self.supervisor.stopping:
                raise Unavailable("shutting down")
            if not self.started:
                raise Unavailable("the pool is not running")
            if self.supervisor.hopeless:
                self.counters["503"] += 1
                raise Unavailable("no worker could load the app", self.supervisor.retry_after())
            if len(self._waiters) >= self.config.backlog:
                self.counters["503"] += 1
                raise Unavailable("the request queue is full")
            future: asyncio.Future[Slot] = (self.loop or asyncio.get_running_loop()).create_future()
            self._waiters.append(future)
            self.supervisor.queued(len(self._waiters))
            try:
                if self.config.queue_timeout:
                    slot = await asyncio.wait_for(asyncio.shield(future), self.config.queue_timeout)
                else:
                    slot = await future  # _offer() popped it from the queue
            except BaseException as exc:
                if future in self._waiters:  # (not remove()+ValueError: that formats a repr)
                    self._waiters.remove(future)
                if future.done() and not future.cancelled() and future.exception() is None:
                    # Handed a slot just as we gave up (timeout, client gone): pass it on.
                    self.give_back(future.result())
                else:
                    future.cancel()
                if isinstance(exc, asyncio.TimeoutError):
                    self.counters["503"] += 1
                    raise Unavailable("timed out waiting for a worker") from None
                raise
            if slot.worker.state is not DEAD:
                return slot
            slot.reserved = False  # its worker died after handing it to us: queue again

    def begin(self, slot: Slot) -> Exchange:
        """A new request on ``slot`` (taken from :meth:`acquire`): its events go to the exchange now."""
        slot.reserved = False
        self._next_rid = (self._next_rid + 1) & 0xFFFFFFFF
        exchange = Exchange(self._next_rid, slot, self._end, self.config.response_buffer, self.config.spool_dir,
                            self.deadlines)
        exchange.loop = self.loop
        slot.pipe.exchange = exchange
        return exchange

    def _end(self, exchange: Exchange, outcome: Outcome) -> None:
        """The worker is done with ``exchange``'s request: the one place a slot is released.

        After its last frame the slot takes the next request (unless the
        supervisor retires its worker); at the deadline the worker, stuck, is
        replaced; a lost worker's slot is gone already."""
        slot = exchange.slot
        slot.pipe.exchange = None
        busy = time.monotonic() - slot.since  # (set when the request was sent: see WSGIPool._serve)
        slot.worker.busy_time += busy
        self.busy_seconds += busy
        if outcome.__class__ is Lost:
            return
        if outcome.__class__ is TimedOut:
            why = (f"request exceeded the {self.config.timeout:g} s timeout" if not exchange.cancelled
                   else "cancelled request exceeded the timeout")
            self.supervisor.kill(slot.worker, why, slot)
            return
        self.counters["served"] += 1
        if self.supervisor.released(slot):
            self._offer(slot)

    def _lost(self, slot: Slot, reason: str) -> None:
        """``slot``'s worker is gone (the supervisor says): no request goes there, and its request is lost."""
        self._withdraw(slot)
        exchange = slot.exchange
        if exchange is not None:
            exchange.feed(Lost(reason, slot.pipe))  # (which ends it: see _end)

    def background(self, coro: Any) -> None:
        self.supervisor.background(coro)

    def _offer(self, slot: Slot) -> None:
        # A waiter handed a slot may give it straight back (a fast path's stand-in whose client
        # left: give_back), which offers it again from inside set_result: that offer is queued
        # for this loop, not made by recursion (hundreds of departed clients overflowed the stack).
        offering = self._offering
        if offering is not None:
            offering.append(slot)
            return
        self._offering = offering = [slot]
        try:
            while offering:
                slot = offering.pop()
                while self._waiters:
                    waiter = self._waiters.popleft()
                    if not waiter.done():
                        slot.reserved = True
                        waiter.set_result(slot)
                        break
                else:
                    slot.reserved = False
                    self._idle.append(slot)
        finally:
            self._offering = None

    def _withdraw(self, slot: Slot) -> None:
        try:
            self._idle.remove(slot)
        except ValueError:
            pass

    def _fail_waiters(self, exc: Unavailable | None = None) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if exc is None:
                    self.counters["503"] += 1
                    waiter.set_exception(Unavailable("no worker could load the app", self.supervisor.retry_after()))
                else:
                    waiter.set_exception(exc)

    # ------------------------------------------------------------ observability

    def stats(self) -> dict[str, Any]:
        self.supervisor.refresh_rss()
        now = self.supervisor.clock.now() if self.supervisor.clock is not None else 0.0
        return {
            "workers": [w.info(now) for w in self.workers.values()],
            "threads": self.config.threads,
            "workers_min": self.config.workers_min,
            "workers_max": self.config.workers_max,
            "idle_slots": len(self._idle),
            "queued": sum(1 for w in self._waiters if not w.done()),
            "busy_seconds": round(self.busy_seconds, 6),
            **self.counters,
            "deaths": dict(self.supervisor.deaths),
        }
