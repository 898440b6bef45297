"""Queued requests whose client may leave: watched only once the wait gets long.

Under overload the queue is where abandoned requests pile up (clients time out
and retry); none of them should cost a worker, so a request that waits long
enough starts listening for its client's ``http.disconnect``.  Short waits are
the common case under load (every request queues when the front outpaces the
workers), so they must cost next to nothing: no timer per request — a dict
entry, and one sweep every :attr:`QueueWatch.after` seconds while anyone waits.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..types import Message, Receive


class Waiting:
    """One queued request: its task, and whether its client left."""

    __slots__ = ("task", "receive", "since", "watcher", "left")

    def __init__(self, task: "asyncio.Task[Any]", receive: Receive, since: float) -> None:
        self.task = task
        self.receive = receive
        self.since = since
        self.watcher: asyncio.Future[Message] | None = None
        self.left = False

    def watch(self) -> None:
        # The body is complete, so the next message can only be http.disconnect.
        self.watcher = asyncio.ensure_future(self.receive())
        self.watcher.add_done_callback(self._on_leave)

    def _on_leave(self, _: "asyncio.Future[Message]") -> None:
        self.left = True
        self.task.cancel()

    def unwatch(self) -> None:
        watcher = self.watcher
        if watcher is not None:
            watcher.remove_done_callback(self._on_leave)
            if not watcher.done():
                watcher.cancel()


class QueueWatch:
    """Starts :meth:`Waiting.watch` for requests queued ``after`` seconds or more.

    A request starts watching between ``after`` and ``2 * after`` into its wait.
    """

    __slots__ = ("after", "_waiting", "_loop", "_handle")

    def __init__(self, after: float) -> None:
        self.after = after
        self._waiting: dict[Waiting, None] = {}  # insertion order = queue order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def add(self, task: "asyncio.Task[Any]", receive: Receive, loop: asyncio.AbstractEventLoop) -> Waiting:
        entry = Waiting(task, receive, loop.time())
        self._waiting[entry] = None
        if self._handle is None:
            self._loop = loop
            self._handle = loop.call_later(self.after, self._sweep)
        return entry

    def remove(self, entry: Waiting) -> None:
        self._waiting.pop(entry, None)
        entry.unwatch()

    def __len__(self) -> int:
        return len(self._waiting)

    def _sweep(self) -> None:
        self._handle = None
        assert self._loop is not None
        due = self._loop.time() - self.after
        for entry in self._waiting:  # (watch() changes nothing here: its callbacks run later)
            if entry.since > due:
                break  # the rest queued later
            if entry.watcher is None:
                entry.watch()
        if self._waiting:
            self._handle = self._loop.call_later(self.after, self._sweep)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
