"""The zygote: a small, single-threaded process that starts the workers.

Forking straight from the front is unsafe: it runs an event loop, may have
threads holding locks, and holds every client connection's descriptor.  So the
front starts one clean zygote at pool start-up, before any of that exists, and
asks it for workers over a control socket.  The zygote forks them (``fork``) or
spawns fresh interpreters (``spawn``), reaps them, and reports each exit.

The zygote dies with the front (``PR_SET_PDEATHSIG`` and EOF on its control
socket), and the workers die with the zygote, so nothing outlives the front.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import traceback
from typing import NoReturn

from ..ipc import protocol
from ..ipc.worker_pipe import WorkerPipe
from ..loader import AppRef, describe
from ..proctitle import TITLE_ENV, set_role, set_title, title
from .process import die_with_parent, reset_signals, run_worker


class _Zygote:
    def __init__(self, ctl: socket.socket, app_ref: AppRef, start_method: str) -> None:
        self.ctl = WorkerPipe(ctl)
        self.app_ref = app_ref
        self.start_method = start_method
        self.pid = os.getpid()

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
                self.ctl._fill()
                while self.ctl._events:
                    event = self.ctl._events.popleft()
                    if isinstance(event, protocol.Spawn):
                        fds = self.ctl.take_fds(event.slots)
                        pid = self._start(fds, event.worker_id)
                        self.ctl.send(protocol.encode_spawned(event.worker_id, pid))
                if self.ctl._eof:
                    # The front is gone or shutting down: workers follow us
                    # through their own PDEATHSIG.
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
            entry = "import sys; from a2wsgi_mp.workers.process import main; main(sys.argv[1:])"
            argv = [sys.executable, "-c", entry, str(self.app_ref), str(self.pid)]
            pid = os.posix_spawn(sys.executable, argv + [str(fd) for fd in fds], {**os.environ, TITLE_ENV: name})
        else:
            pid = os.fork()
            if pid == 0:
                try:
                    signal.set_wakeup_fd(-1)
                    for s in self._wake:
                        s.close()
                    self.ctl.sock.close()
                    set_title(name)
                    run_worker(self.app_ref, [socket.socket(fileno=fd) for fd in fds], self.pid)
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(1)
        for fd in fds:
            os.close(fd)
        return pid


def run_zygote(ctl: socket.socket, app_ref: AppRef, start_method: str, parent_pid: int) -> NoReturn:
    try:
        die_with_parent(parent_pid)
        # The zygote ends only with the front (EOF, or PDEATHSIG): a SIGTERM to
        # everyone must not take the workers down before the front drains them.
        reset_signals(signal.SIG_IGN)
        # Our own process group, so terminal and group signals reach the front only.
        os.setpgid(0, 0)
        set_role("zygote", describe(app_ref))
        _Zygote(ctl, app_ref, start_method).run()
    except BaseException:
        traceback.print_exc()
    os._exit(1)


def main(argv: list[str]) -> NoReturn:
    """Entry point of a spawned zygote: ``APP START_METHOD PARENT_PID FD``."""
    app_ref, start_method, parent_pid, fd = argv
    run_zygote(socket.socket(fileno=int(fd)), app_ref, start_method, int(parent_pid))

