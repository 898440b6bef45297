"""Death reports: what a worker was doing when it was killed or died, and why it died.

The worker side is :mod:`a2wsgi_mp.reportfile`: each worker keeps a small
anonymous file (memfd) that :mod:`faulthandler` writes stacks to.  When a
worker is ready the front opens its own descriptor of that file
(``/proc/PID/fd/N``), so it can read it even after the worker is gone:

* **timeout**: before the kill, the front sends :data:`~a2wsgi_mp.reportfile.DUMP_SIGNAL`
  and waits a moment (at most :data:`DUMP_WAIT`) for every thread's stack; the
  504 has been sent already, and the replacement is starting;
* **crash**: the exit status (signal or code) is awaited for a moment after the
  connection broke; a fatal error's faulthandler dump, if any, is in the file;
* **OOM kill**: a SIGKILL the front did not send, while the worker's memory
  cgroup counted one more ``oom_kill`` (cgroup v2 ``memory.events``, v1
  ``memory.oom_control``) or, failing that, the kernel's ``/proc/vmstat`` did.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..reportfile import MEMFD_NAME

if TYPE_CHECKING:
    from .worker import Slot, Worker

#: The longest a timeout kill waits for the worker's stacks.
DUMP_WAIT = 0.5
#: The most of a report file read (a dump of hundreds of deep threads is smaller).
MAX_REPORT = 256 * 1024
#: The reasons deaths are counted by (``stats()["deaths"]``).
REASONS = ("timeout", "crash", "oom", "max_rss_hard")

MiB = 1024 * 1024


def open_report(pid: int) -> int:
    """Our own descriptor of worker ``pid``'s report file; -1 if it has none (or no /proc)."""
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return -1
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith(f"/memfd:{MEMFD_NAME}"):
            try:
                return os.open(f"{base}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return -1
    return -1


def read_report(fd: int, start: int = 0) -> str:
    """What the worker wrote to its report file from byte ``start`` on."""
    if fd < 0:
        return ""
    try:
        return os.pread(fd, MAX_REPORT, start).decode("utf-8", "replace")
    except OSError:
        return ""


def report_size(fd: int) -> int:
    try:
        return os.fstat(fd).st_size if fd >= 0 else 0
    except OSError:
        return 0


async def take_stacks(fd: int, send_signal: Callable[[], None], wait: float = DUMP_WAIT) -> str:
    """Ask the worker for its stacks and return them ("" if none came within ``wait`` s).

    faulthandler writes the dump in one go from a signal handler, in
    microseconds; we poll the file's size until it stops growing.
    """
    if fd < 0:
        return ""
    start = report_size(fd)
    send_signal()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    size, stable = start, 0
    while loop.time() < deadline:
        await asyncio.sleep(0.01)
        new = report_size(fd)
        if new > start and new == size:
            stable += 1
            if stable >= 2:  # 20 ms without growth: done
                break
        else:
            stable = 0
        size = new
    return app_stacks(read_report(fd, start)) if size > start else ""


#: Threads of ours in every worker, left out of a report: (file, function) of one of their frames.
_OWN_THREADS = (("a2wsgi_mp/workers/lifeline.py", "wait"), ("a2wsgi_mp/workers/process.py", "watch"),
                ("a2wsgi_mp/reportfile.py", "dump_stacks"))


def app_stacks(dump: str) -> str:
    """faulthandler's dump without the blocks of the pool's own threads (the front watch,
    the RSS watch): what is left is the app's threads, and any header or trailer."""
    blocks = dump.split("\n\n")
    kept = []
    for block in blocks:
        frames = [line.strip() for line in block.splitlines() if line.strip().startswith("File ")]
        if any(frame_is(frame, where, fn) for frame in frames for where, fn in _OWN_THREADS):
            continue
        kept.append(block)
    return "\n\n".join(kept)


def frame_is(frame: str, where: str, function: str) -> bool:
    """Is faulthandler's ``File "PATH", line N in FUNC`` in ``where`` (a path suffix), in ``function``?"""
    path, _, rest = frame.partition('", line ')
    return path.replace("\\", "/").endswith(where) and rest.endswith(f" in {function}")


def request_line(scope: Mapping[str, Any] | None) -> str:
    """``GET /path?query HTTP/1.1`` from an ASGI scope (as an access log shows it)."""
    if not scope:
        return ""
    path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
    if isinstance(path, str):
        path = path.encode("utf-8", "replace")
    query = scope.get("query_string") or b""
    target = path + (b"?" + query if query else b"")
    return f'{scope.get("method", "?")} {target.decode("latin-1")} HTTP/{scope.get("http_version", "1.1")}'


def serving(slots: "list[Slot]", now: float) -> str:
    """The requests in flight on these slots: ``"GET /x HTTP/1.1" for 1.2 s``, or "no request"."""
    parts = [f'"{request_line(s.request)}" for {now - s.since:.1f} s'
             for s in slots if s.exchange is not None and s.request is not None]
    return "serving " + ", ".join(parts) if parts else "idle"


# ------------------------------------------------------------------ OOM kills


def memory_counter(pid: int) -> str | None:
    """The file counting OOM kills in ``pid``'s memory cgroup (v2 or v1), or None."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        hier, controllers, path = line.split(":", 2)
        if hier == "0" and controllers == "":  # cgroup v2 (unified)
            for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                candidate = f"{root}{path.rstrip('/')}/memory.events"
                if os.path.exists(candidate):
                    return candidate
        elif "memory" in controllers.split(","):  # cgroup v1
            candidate = f"/sys/fs/cgroup/memory{path.rstrip('/')}/memory.oom_control"
            if os.path.exists(candidate):
                return candidate
    return None


def oom_kills(counter: str | None) -> int:
    """The ``oom_kill`` count in a cgroup file (or /proc/vmstat when None); -1 if unreadable."""
    try:
        with open(counter or "/proc/vmstat") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return -1


def memory_limit(counter: str | None) -> int:
    """The memory limit of the cgroup whose counter file this is, in bytes; 0 for none."""
    if not counter:
        return 0
    base = os.path.dirname(counter)
    for name in ("memory.max", "memory.limit_in_bytes"):
        try:
            with open(os.path.join(base, name)) as f:
                value = f.read().strip()
        except OSError:
            continue
        if value == "max" or not value.isdigit() or int(value) >= 2**62:
            return 0
        return int(value)
    return 0


class OomWatch:
    """Tells whether the kernel's OOM killer struck since we last looked, per counter file."""

    def __init__(self) -> None:
        self._seen: dict[str | None, int] = {}

    def track(self, counter: str | None) -> None:
        """Start following ``counter`` (a worker became ready in that cgroup)."""
        for c in {counter, None}:
            if c not in self._seen:
                self._seen[c] = oom_kills(c)

    def struck(self, counter: str | None) -> str | None:
        """If an OOM kill was counted since the last look: where (for the log); else None.

        cgroup v2's ``memory.events`` counts its processes killed by any OOM killer: it
        alone decides.  v1's ``memory.oom_control`` counts only the cgroup's own limit
        being hit, so the kernel-wide count (``/proc/vmstat``) is asked too."""
        v2 = bool(counter) and counter.endswith("memory.events") and oom_kills(counter) >= 0  # type: ignore[union-attr]
        for c in (counter,) if v2 else (counter, None) if counter else (None,):
            before, now = self._seen.get(c, -1), oom_kills(c)
            self._seen[c] = now
            if before >= 0 and now > before:
                limit = memory_limit(c)
                where = (f"cgroup {os.path.dirname(c)}" + (f", limit {mib(limit)}" if limit else "")
                         if c else "the kernel's /proc/vmstat")
                return f"oom_kill {before} -> {now} in {where}"
        return None


def was_oom(worker: "Worker", status: int | None, oom: OomWatch) -> str | None:
    """For a worker SIGKILLed by someone else: the OOM evidence, if any."""
    if status is None or not os.WIFSIGNALED(status) or os.WTERMSIG(status) != signal.SIGKILL:
        return None
    if worker.killed:  # we sent it (timeout, shutdown)
        return None
    return oom.struck(worker.memory_counter)


def mib(rss: int) -> str:
    return f"{rss / MiB:.0f} MiB" if rss else "unknown"
