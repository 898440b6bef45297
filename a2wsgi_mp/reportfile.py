"""A worker's report file: its Python stacks, readable by the front even after it died.

Shared by both ends: the worker creates and writes it (:func:`install`), the
front reads it (:mod:`a2wsgi_mp.pool.reports`).

A worker about to be killed for a timeout is usually stuck: in a slow query,
in a lock, in C code that holds the GIL.  A Python-level signal handler would
run only when (if) the main thread gets back to the interpreter loop, so the
dump is :mod:`faulthandler`'s, written from the C signal handler, which reads
every thread's frames without taking the GIL.  It goes to an anonymous memory
file (``memfd``) created here; the front opens its own descriptor of that file
through ``/proc/PID/fd`` when the worker is ready (:mod:`a2wsgi_mp.pool.reports`),
so it can read what the worker wrote even once the worker is gone:

* the front sends :data:`DUMP_SIGNAL` before it kills a worker for a timeout,
  and reads the stacks (all threads) that faulthandler appends;
* a fatal error (SIGSEGV, SIGFPE, SIGABRT, SIGBUS, SIGILL) appends
  faulthandler's "Fatal Python error" dump: a crash report shows where;
* the worker writes its own report there before it ends itself for
  ``max_rss_hard`` (:func:`a2wsgi_mp.workers.process.watch_rss`), and exits
  with :data:`EXIT_RSS_HARD`.

Nothing is written on the happy path, and the file lives as long as the worker
(and the front's descriptor of it).
"""

from __future__ import annotations

import faulthandler
import os
import signal

#: What the front sends for a dump: a real-time signal, so it does not clash
#: with an app's own SIGUSR1/SIGUSR2 (SIGUSR2 where real-time signals do not exist).
DUMP_SIGNAL = signal.SIGRTMIN + 3 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2
#: The memfd's name, by which the front finds it in ``/proc/PID/fd``.
MEMFD_NAME = "a2wsgi_mp-report"
#: A worker's exit code when it ended itself because one request took it past ``max_rss_hard``.
EXIT_RSS_HARD = 4

_fd = -1


def install() -> int:
    """Create the report file and point faulthandler at it; its descriptor, or -1 (no memfd)."""
    global _fd
    if _fd >= 0:
        return _fd
    if not hasattr(os, "memfd_create"):
        return -1
    try:
        fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC)
    except OSError:
        return -1
    faulthandler.enable(file=fd, all_threads=True)
    faulthandler.register(DUMP_SIGNAL, file=fd, all_threads=True, chain=False)
    _fd = fd
    return fd


def write(text: str) -> None:
    """Append ``text`` to the report file (nothing without one)."""
    if _fd >= 0:
        try:
            os.write(_fd, text.encode("utf-8", "replace"))
        except OSError:
            pass


def dump_stacks() -> None:
    """Append every thread's stack to the report file, from this process."""
    if _fd >= 0:
        faulthandler.dump_traceback(file=_fd, all_threads=True)
