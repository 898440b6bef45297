"""The front's view of one worker process: its lifecycle and its connections.

A worker's life is a small state machine, kept here as a table so that every
legal step is written down once and an illegal one fails loudly (h11 keeps its
connection states the same way)::

    BOOTING ──ready──▶ READY ──retire──▶ RETIRING ──exit──▶ DEAD
       │ │                └──────────exit───────────────────▶ ▲
       │ └──retire──▶ RETIRING                                │
       ├──boot error──▶ BOOT_FAILED ──exit────────────────────┤
       └──exit────────────────────────────────────────────────┘

The supervisor (:mod:`.supervisor`) decides *when* a worker retires; this
module only says which steps exist.
"""

from __future__ import annotations

import enum
import os
import signal
from typing import TYPE_CHECKING, Any, MutableMapping

import psutil

if TYPE_CHECKING:
    from ..ipc.pipe import FrontPipe
    from .exchange import Exchange


class State(str, enum.Enum):
    """Where a worker is in its life (the values appear in ``stats()`` and the metrics)."""

    BOOTING = "booting"  # started, loading the app; not serving yet
    READY = "ready"  # every slot connected and the app loaded: takes requests
    RETIRING = "retiring"  # takes no new request; hung up on once idle
    BOOT_FAILED = "boot-failed"  # could not load the app; its exit follows
    DEAD = "dead"  # its process or its connections are gone

    def __str__(self) -> str:
        return self.value


class Step(enum.Enum):
    """What can happen to a worker."""

    READY = "ready"  # all its slots said READY
    BOOT_ERROR = "boot error"  # it could not load the app
    RETIRE = "retire"  # the supervisor gives it no more requests
    EXIT = "exit"  # its process exited or its connection closed


TRANSITIONS: dict[tuple[State, Step], State] = {
    (State.BOOTING, Step.READY): State.READY,
    (State.BOOTING, Step.BOOT_ERROR): State.BOOT_FAILED,
    (State.BOOTING, Step.RETIRE): State.RETIRING,
    (State.BOOTING, Step.EXIT): State.DEAD,
    (State.READY, Step.RETIRE): State.RETIRING,
    (State.READY, Step.EXIT): State.DEAD,
    (State.RETIRING, Step.EXIT): State.DEAD,
    (State.BOOT_FAILED, Step.EXIT): State.DEAD,
}


class IllegalTransition(RuntimeError):
    """A step the worker's state does not allow: a bug in the supervisor."""


class Slot:
    """One connection to one worker thread."""

    __slots__ = ("worker", "pipe", "ready", "reserved", "request", "since")

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.pipe: "FrontPipe" = None  # type: ignore[assignment]
        self.ready = False
        #: The ASGI scope of the request on this slot, and when it was sent
        #: (``time.monotonic()``): what a death report says the worker was doing.
        self.request: "MutableMapping[str, Any] | None" = None
        self.since = 0.0
        #: Handed to a queued request that has not started its exchange yet:
        #: busy already, or a retiring worker would hang up under it.
        self.reserved = False

    @property
    def exchange(self) -> "Exchange | None":
        """The request on this slot: bound to its connection by the dispatcher, and only there."""
        pipe = self.pipe
        return pipe.exchange if pipe is not None else None  # type: ignore[return-value]


class Worker:
    """One worker process, as the front sees it."""

    def __init__(self, wid: int, threads: int, max_requests: int, epoch: int, now: float) -> None:
        self.id = wid
        self.pid: int | None = None
        self.slots = [Slot(self) for _ in range(threads)]
        self.state = State.BOOTING
        self.requests = 0
        self.max_requests = max_requests
        self.started = now
        self.retire_reason = ""
        #: The reload it was started for (:attr:`Supervisor.epoch`): older ones are replaced.
        self.epoch = epoch
        self.rss = 0
        #: Since when no request ran on this worker (the elastic pool retires long-idle ones).
        self.idle_since = now
        #: Which zygote was asked to start it (Zygote.generation): the one that reports its exit.
        self.zygote = 0
        #: Seconds its threads spent on requests (its utilisation is this over its age).
        self.busy_time = 0.0
        #: Death reports (:mod:`.reports`): our descriptor of its report file (-1: none),
        #: how much of it was read, its memory cgroup's OOM counter, whether we
        #: signalled it to end, its exit status once known, and a report
        #: (reason, what it was doing) waiting for that status.
        self.report_fd = -1
        self.report_read = 0
        self.memory_counter: str | None = None
        self.killed = False
        self.exit_status: int | None = None
        self.exited = False
        self.death: "tuple[str, str] | None" = None
        #: ``reload_check``: it got its warm-up request; it belonged to a reload that failed.
        self.warmed = False
        self.abandoned = False

    def step(self, step: Step) -> State:
        """Take ``step``; IllegalTransition if the current state does not allow it."""
        new = TRANSITIONS.get((self.state, step))
        if new is None:
            raise IllegalTransition(f"worker {self.id} (pid {self.pid}) is {self.state.value}: "
                                    f"'{step.value}' is not allowed")
        self.state = new
        return new

    @property
    def busy(self) -> int:
        return sum(1 for s in self.slots if s.exchange is not None or s.reserved)

    @property
    def live(self) -> bool:
        """Booting or serving, and not on its way out."""
        return self.state is State.BOOTING or self.state is State.READY

    @property
    def serving(self) -> bool:
        return self.state is State.READY or self.state is State.RETIRING

    def info(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "state": self.state.value,
            "requests": self.requests,
            "busy": self.busy,
            "rss": self.rss,
            "age": round(now - self.started, 3),
            "busy_time": round(self.busy_time, 6),
            # What each busy slot is doing: its request's method, path and age.
            "serving": [{"method": s.request.get("method", "-"), "path": s.request.get("path", "-"),
                         "age": round(now - s.since, 3)}
                        for s in self.slots if s.request is not None and s.exchange is not None],
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
