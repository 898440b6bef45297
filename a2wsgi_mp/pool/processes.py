"""Worker processes the front did not fork: watched and signalled by pidfd.

The workers are the zygote's children, and they outlive it: when the zygote
dies they are re-parented to init (or the nearest subreaper), which reaps them.
The front therefore never ``waitpid``s a worker.  It holds a pidfd of each one
instead, which

* becomes readable when the process exits, whoever its parent is by then, so
  the event loop learns of every exit even with no zygote to report it;
* is signalled with ``pidfd_send_signal``, so a pid that was reaped by someone
  else and reused by an unrelated process is never hit.

The exit *status* comes only from the zygote that reaped the process; for a
worker that outlived its zygote it is unknown.

Where pidfds do not exist (not Linux, kernel < 5.3) a handle falls back to the
plain pid, which is only safe while the zygote is alive to report the exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

HAVE_PIDFD = sys.platform.startswith("linux") and hasattr(os, "pidfd_open")


def open_pidfd(pid: int) -> int:
    """A pidfd of ``pid``; -1 where pidfds are unsupported; ProcessLookupError if it is gone."""
    if not HAVE_PIDFD:
        return -1
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError:  # ENOSYS (old kernel), EPERM (seccomp): plain pids then
        return -1


class ProcessHandle:
    """The front's handle on one worker process."""

    __slots__ = ("pid", "fd", "generation", "exited")

    def __init__(self, pid: int, generation: int) -> None:
        self.pid = pid
        #: The zygote that started it (see :attr:`Zygote.generation`).
        self.generation = generation
        #: Seen to exit (pidfd readable), waiting for its zygote's status.
        self.exited = False
        try:
            self.fd = open_pidfd(pid)
        except ProcessLookupError:
            self.fd = -1
            self.exited = True

    def signal(self, sig: int) -> None:
        try:
            if self.fd >= 0:
                signal.pidfd_send_signal(self.fd, sig)
            elif not self.exited:
                os.kill(self.pid, sig)
        except (ProcessLookupError, OSError):
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ProcessTable(Generic[T]):
    """The processes not yet known to have ended, by pid, each with its owner.

    An end is known from the zygote's report (``exited``, with the status) or
    from the pidfd; while the reporting zygote lives, a readable pidfd only
    marks the process as ended and the status is awaited, so logs say how a
    worker died.  ``on_gone(owner, status)`` is called once per process,
    ``status`` None when it is unknown.
    """

    def __init__(
        self,
        on_gone: Callable[[T, "int | None"], None],
        reporter_alive: Callable[[int], bool],
        handle: Callable[[int, int], ProcessHandle] = ProcessHandle,
    ) -> None:
        self._on_gone = on_gone
        self._reporter_alive = reporter_alive
        #: Makes the handle of a new process (unit tests pass one that signals no real process).
        self._handle = handle
        self._procs: dict[int, tuple[ProcessHandle, T]] = {}

    def __len__(self) -> int:
        return len(self._procs)

    def __contains__(self, pid: object) -> bool:
        return pid in self._procs

    def owners(self) -> list[T]:
        return [owner for _, owner in self._procs.values()]

    def add(self, pid: int, owner: T, generation: int) -> None:
        if pid in self._procs:
            return
        proc = self._handle(pid, generation)
        self._procs[pid] = (proc, owner)
        if proc.fd >= 0:
            asyncio.get_running_loop().add_reader(proc.fd, self._readable, pid)
        elif proc.exited:
            self.gone(pid, None)

    def signal(self, pid: int, owner: T, sig: int) -> None:
        entry = self._procs.get(pid)
        if entry is not None and entry[1] is owner:
            entry[0].signal(sig)

    def _readable(self, pid: int) -> None:
        proc, _ = self._procs[pid]
        asyncio.get_running_loop().remove_reader(proc.fd)
        proc.exited = True
        if not self._reporter_alive(proc.generation):
            self.gone(pid, None)  # nobody will report its status

    def reporter_lost(self) -> None:
        """A zygote died: settle what it can no longer report on."""
        for pid, (proc, _) in list(self._procs.items()):
            if (proc.exited or proc.fd < 0) and not self._reporter_alive(proc.generation):
                self.gone(pid, None)

    def forget_all(self) -> None:
        """Stop following every process (the pool is stopped; they were killed)."""
        for pid in list(self._procs):
            proc, _ = self._procs.pop(pid)
            if proc.fd >= 0 and not proc.exited:
                asyncio.get_running_loop().remove_reader(proc.fd)
            proc.close()

    def gone(self, pid: int, status: int | None) -> None:
        """The process ended (``status``: raw waitpid status, or None)."""
        entry = self._procs.pop(pid, None)
        if entry is None:
            return
        proc, owner = entry
        if proc.fd >= 0 and not proc.exited:
            asyncio.get_running_loop().remove_reader(proc.fd)
        proc.close()
        self._on_gone(owner, status)
