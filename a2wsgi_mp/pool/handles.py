"""The front's handles on worker processes and on their connections."""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from .exchange import Exchange
    from ..ipc.pipe import FrontPipe


class Slot:
    """One connection to one worker thread."""

    __slots__ = ("worker", "pipe", "exchange", "ready", "reserved")

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.pipe: "FrontPipe" = None  # type: ignore[assignment]
        self.exchange: "Exchange | None" = None
        self.ready = False
        #: Handed to a queued request that has not started its exchange yet:
        #: busy already, or a retiring worker would hang up under it.
        self.reserved = False


class Worker:
    """One worker process, as the front sees it."""

    def __init__(self, wid: int, threads: int, max_requests: int) -> None:
        self.id = wid
        self.pid: int | None = None
        self.slots = [Slot(self) for _ in range(threads)]
        self.state = "booting"  # booting -> ready -> retiring -> dead (or boot-failed -> dead)
        self.requests = 0
        self.max_requests = max_requests
        self.started = time.monotonic()
        self.retire_reason = ""
        #: While booting as a reload replacement: the worker it will retire.
        self.replaces: Worker | None = None
        #: The reload replacement booting for this worker, if any.
        self.replaced_by: Worker | None = None
        self.rss = 0
        #: Since when no request ran on this worker (the elastic pool retires long-idle ones).
        self.idle_since = self.started
        #: Which zygote was asked to start it (Launcher.generation): the one that reports its exit.
        self.zygote = 0

    @property
    def busy(self) -> int:
        return sum(1 for s in self.slots if s.exchange is not None or s.reserved)

    @property
    def serving(self) -> bool:
        return self.state in ("ready", "retiring")

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "state": self.state,
            "requests": self.requests,
            "busy": self.busy,
            "rss": self.rss,
            "age": round(time.monotonic() - self.started, 3),
        }


def rss(pid: int) -> int:
    """Resident memory of a process in bytes; 0 once it is gone."""
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
