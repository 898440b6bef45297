"""The zygote: a small, single-threaded process that starts the workers.

Forking straight from the front is unsafe: it runs an event loop, may have
threads holding locks, and holds every client connection's descriptor.  So the
front starts one clean zygote at pool start-up, before any of that exists, and
asks it for workers over a control socket.  The zygote forks them (``fork``) or
spawns fresh interpreters (``spawn``), reaps them, and reports each exit.

With ``preload``, the zygote (a fresh interpreter, never the front) imports
the app itself before it forks anything, then freezes its heap (``gc.freeze()``): the
workers share the app's pages copy-on-write, and the cyclic GC, which would
write to every object it tracks, leaves those pages alone.

The zygote dies with the front (``PR_SET_PDEATHSIG`` and EOF on its control
socket).  The workers do not die with the zygote: each watches a pidfd of the
front (:func:`a2wsgi_mp.workers.lifeline.watch_front`), so a killed zygote costs no
request while the front starts a new one, and still nothing outlives the
front.  Workers left behind by a dead zygote are re-parented to init (or the
nearest subreaper), which reaps them; the front follows them by pidfd.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any, NoReturn

from ..hooks import HookError, load_hooks
from ..ipc import protocol
from ..ipc.worker_pipe import PeerGone, WorkerPipe
from ..loader import AppLoadError, AppRef, describe, load_app
from ..proctitle import TITLE_ENV, set_role, set_title, title
from .inherited import close_inherited
from .process import EXIT_BOOT_FAILED, die_with_parent, reset_signals, run_worker


def own_session(session: bool) -> None:
    """A process group of our own, in a session of our own if ``session``."""
    if session:
        try:
            os.setsid()
            return
        except OSError:  # (already a group leader: the workers report the autogroup they got)
            pass
    os.setpgid(0, 0)


class _Zygote:
    def __init__(self, ctl: socket.socket, app_ref: AppRef, start_method: str, front_fd: int,
                 options: dict[str, Any] | None = None) -> None:
        self.ctl = WorkerPipe(ctl)
        #: The front's settings for every worker (see :func:`~a2wsgi_mp.workers.process.run_worker`).
        self.options = options or {}
        #: A pidfd of the front, handed down to every worker (-1: none).
        self.front_fd = front_fd
        self.app_ref = app_ref
        self.start_method = start_method
        self.pid = os.getpid()
        #: What forked workers serve: the preloaded app, or the reference each imports.
        self.app: AppRef = app_ref
        self.preloaded = False

    def preload(self) -> None:
        """Import the app here, once; READY or BOOT_ERROR tells the front how it went.

        As the :func:`gc.freeze` docs advise: no collection while importing
        (a collection frees objects and leaves holes in the pages, which the
        workers would then fill, un-sharing them), freeze before forking, and
        collect again only in the workers.
        """
        gc.disable()
        try:
            self.app = load_app(self.app_ref)
            load_hooks(self.options.get("hooks"))  # (imported once here too: shared with the workers)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, (AppLoadError, HookError)) else traceback.format_exc()
            self.ctl.send(protocol.encode_boot_error(message))
            os._exit(EXIT_BOOT_FAILED)
        # Everything allocated so far (the app) is left alone by the collector
        # from now on, here and in every forked worker: its pages stay shared.
        gc.freeze()
        self.preloaded = True
        self.ctl.send(protocol.encode_ready(self.pid))

    def run(self) -> NoReturn:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self._wake = (wake_r, wake_w)
        while True:
            readable, _, _ = select.select([self.ctl.sock, wake_r], [], [])
            if wake_r in readable:
                try:
                    while wake_r.recv(4096):
                        pass
                except BlockingIOError:
                    pass
            self._reap()
            if self.ctl.sock in readable:
                self.ctl.fill()
                while (event := self.ctl.conn.next_event()) is not None:
                    if isinstance(event, protocol.Spawn):
                        fds = self.ctl.take_fds(event.slots)
                        pid = self._start(fds, event.worker_id)
                        self.ctl.send(protocol.encode_spawned(event.worker_id, pid))
                if self.ctl.eof:
                    # The front is gone or shutting down; the workers end on
                    # their own (EOF on their connections, or the front's pidfd).
                    os._exit(0)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.ctl.send(protocol.encode_exited(pid, status))

    def _start(self, fds: list[int], worker_id: int) -> int:
        name = title(f"worker {worker_id}", describe(self.app_ref))
        if self.start_method == "spawn":
            for fd in fds:
                os.set_inheritable(fd, True)
            if self.front_fd >= 0:
                os.set_inheritable(self.front_fd, True)
            entry = "import sys; from a2wsgi_mp.workers.process import main; main(sys.argv[1:])"
            argv = [sys.executable, "-c", entry, str(self.app_ref), str(self.pid), str(self.front_fd),
                    json.dumps({**self.options, "worker_id": worker_id})]
            pid = os.posix_spawn(sys.executable, argv + [str(fd) for fd in fds], {**os.environ, TITLE_ENV: name})
        else:
            pid = os.fork()
            if pid == 0:
                try:
                    signal.set_wakeup_fd(-1)
                    for s in self._wake:
                        s.close()
                    self.ctl.sock.close()
                    if self.preloaded:
                        gc.enable()
                    set_title(name)
                    run_worker(self.app, [socket.socket(fileno=fd) for fd in fds], self.pid, self.front_fd,
                               {**self.options, "worker_id": worker_id})
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(1)
        for fd in fds:
            os.close(fd)
        return pid


def run_zygote(
    ctl: socket.socket, app_ref: AppRef, start_method: str, parent_pid: int, front_fd: int = -1,
    preload: bool = False, options: dict[str, Any] | None = None,
) -> NoReturn:
    try:
        die_with_parent(parent_pid)
        # The zygote ends only with the front (EOF, or PDEATHSIG): a SIGTERM to
        # everyone must not take the workers down before the front drains them.
        reset_signals(signal.SIG_IGN)
        # Our own process group, so terminal and group signals reach the front only;
        # with worker_sched="autogroup" our own session (and so process group): Linux
        # gives a session its own autogroup, which every worker inherits (see
        # a2wsgi_mp.workers.process.set_worker_sched).
        own_session(bool(options and options.get("worker_sched") == "autogroup"))
        set_role("zygote (preloaded)" if preload else "zygote", describe(app_ref))
        zygote = _Zygote(ctl, app_ref, start_method, front_fd, options)
        if preload:
            zygote.preload()
        zygote.run()
    except PeerGone:
        # The front hung up while we told it of a spawn or an exit: it has exited or is
        # stopping, so there is nobody left to tell; the workers end on their own.
        os._exit(0)
    except BaseException:
        traceback.print_exc()
    os._exit(1)


def main(argv: list[str]) -> NoReturn:
    """Entry point of a spawned zygote: ``APP START_METHOD PARENT_PID FD FRONT_PIDFD OPTIONS [preload]``
    (OPTIONS: the workers' settings, JSON)."""
    app_ref, start_method, parent_pid, fd, front_fd, options, *flags = argv
    close_inherited({int(fd), int(front_fd)})
    run_zygote(socket.socket(fileno=int(fd)), app_ref, start_method, int(parent_pid), int(front_fd),
               "preload" in flags, json.loads(options))

