"""The pool's worker process: load the WSGI app once, then serve requests.

One thread per connection ("slot"); with ``threads=1`` that is just the main
thread, blocking on its socket.  The worker makes no decisions about its own
life: recycling, timeouts and shutdown are the front's, which signals them by
hanging up (EOF) or by a signal.
"""

from __future__ import annotations

import ctypes
import io
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, BinaryIO, Callable, NoReturn

from .. import reportfile
from ..environ import UnderscoreHeader, environ_from_head
from ..hooks import HookError, Hooks, ServerView, WorkerView, load_hooks
from ..ipc import protocol
from ..ipc.worker_pipe import PeerGone, WorkerPipe
from ..loader import AppLoadError, AppRef, load_app
from ..proctitle import take_inherited
from ..replies import CLOSE, plain_reply
from ..response import SinkGone, StartResponse, run_wsgi
from .direct import OFFER_WHOLE, ClientWriter
from .filewrapper import FileWrapper, file_span
from .inherited import close_inherited
from .lifeline import watch_front

EXIT_BOOT_FAILED = 3
EXIT_RSS_HARD = reportfile.EXIT_RSS_HARD
#: How often a worker with ``max_rss_hard`` samples its own RSS (a ~2 us read).
RSS_CHECK_INTERVAL = 0.05
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL us when our parent goes, even if it is SIGKILLed.

    Elsewhere the EOF on our sockets is the only signal, which is enough for an
    idle worker but not for one stuck in a request.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def reset_signals(on_term: Any = signal.SIG_DFL) -> None:
    """Defaults, except SIGINT (ignored) and SIGTERM (``on_term``).

    The pool has its own process group, so Ctrl-C in a terminal reaches only
    the front, which drains the pool in order; SIGINT is ignored anyway in case
    someone signals the group.  SIGTERM can still come from outside all at once
    (systemd's default KillMode stops a whole cgroup): the zygote and the workers
    ignore it, and the front, which got it too, drains them in order (a worker
    that left on its own would be replaced, or missed during ``--shutdown-delay``).
    The front ends a worker by hanging up, or by SIGKILL.
    """
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Leaving:
    """The ``worker_exit`` hook, run once when the worker leaves of its own accord."""

    def __init__(self) -> None:
        self.hooks: Hooks = Hooks()
        self.server: ServerView | None = None
        self.worker: WorkerView | None = None
        self.done = False

    def exit(self, code: int) -> NoReturn:
        if not self.done and self.hooks.has("worker_exit"):
            self.done = True
            self.hooks.call_logged("worker_exit", self.server, self.worker)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


_leaving = _Leaving()


class _Rss:
    """This process's resident memory, cheaply: one ``pread`` of a kept-open
    ``/proc/self/statm`` (~2 us), opened in the worker itself (a descriptor
    inherited from the zygote would describe the zygote)."""

    def __init__(self) -> None:
        self.fd = -1
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __call__(self) -> int:
        if self.fd < 0:
            try:
                self.fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return _psutil_rss()
        return int(os.pread(self.fd, 128, 0).split()[1]) * self.page


def _psutil_rss() -> int:
    import psutil  # (not Linux: no /proc)

    return psutil.Process().memory_info().rss


own_rss = _Rss()


class _Sink:
    """A :class:`~a2wsgi_mp.response.ResponseSink` writing frames to the front
    (how they are framed is the pipe's connection's business), or, after the
    front's TAKE, a streamed body straight to the client (:mod:`.direct`)."""

    __slots__ = ("pipe", "rid", "finished", "may_offer", "client")

    def __init__(self, pipe: WorkerPipe, rid: int, may_offer: bool = False) -> None:
        self.pipe = pipe
        self.rid = rid
        self.finished = False
        #: The front can take a streamed body's OFFER (its head said so; never for HEAD).
        self.may_offer = may_offer
        #: Set while we write the body to the client ourselves.
        self.client: ClientWriter | None = None

    def start(self, status: int, headers: list, body: bytes, done: bool) -> None:
        # A streamed body, or a large one in hand (a file read into memory, a big JSON),
        # may go to the client from here (pool/direct.py); a small complete one never
        # needs the round trip.
        whole = done and len(body) >= OFFER_WHOLE
        try:
            if (done and not whole) or not self.may_offer or status in (204, 304):
                self.finished = done
                self.pipe.send_start(self.rid, status, headers, body, done)
                return
            answer = self.pipe.send_start_offer(self.rid, status, headers, b"" if whole else body)
        except PeerGone as exc:
            raise SinkGone(str(exc)) from exc
        if answer:
            self.client = ClientWriter(*answer)
        if whole:
            self.body(body)
            self.end()

    def body(self, chunk: bytes) -> None:
        client = self.client
        if client is not None:
            if client.gone:
                return  # (the app's loop sees cancelled() next)
            rest = client.write(chunk)
            if rest is None:  # all written (or the client left: gone)
                return
            # The client stalled: what it did not take goes back to the front, then the rest by the pipe.
            self.client = None
            self._send(self.pipe.conn.direct(self.rid, client.written, client.tail, False))
            if not rest:
                return
            chunk = bytes(rest)
        try:
            self.pipe.send_body(self.rid, chunk)
        except PeerGone as exc:
            raise SinkGone(str(exc)) from exc

    def end(self) -> None:
        client = self.client
        if client is not None:
            if client.gone:
                self.abort(protocol.CLIENT_LEFT)
                return
            self.finished = True
            self.client = None
            client.close()
            self._send(self.pipe.conn.direct(self.rid, client.written, b"", True))
            return
        self.finished = True
        self._send(self.pipe.conn.end(self.rid))

    def log_error(self, message: str) -> None:
        """An app error of this request: to the front, tied to the request, before its 500 or ABORT."""
        self._send(protocol.encode_app_error(self.rid, message.rstrip("\n")))

    def send_file(self, response: StartResponse, iterable: Any) -> bool:
        """Hand a ``wsgi.file_wrapper`` file to the front by descriptor; False to iterate it."""
        if response.status is None or response.started:
            return False
        span = file_span(iterable, response.remaining)
        if span is None:
            return False
        fd, offset, length = span
        response.started = response.done = True
        self.finished = True
        try:
            self.pipe.send_file(self.rid, response.status, response.headers, offset, length, fd)
        except PeerGone as exc:
            raise SinkGone(str(exc)) from exc
        return True

    def abort(self, reason: str) -> None:
        self.finished = True
        if self.client is not None:
            self.client.close()
            self.client = None
        self._send(self.pipe.conn.abort(self.rid, reason))

    def cancelled(self) -> bool:
        client = self.client
        if client is not None:  # (its writes see the client leave: no look at the pipe per chunk)
            return client.gone
        return self.pipe.cancelled(self.rid)

    def _send(self, data: bytes) -> None:
        try:
            self.pipe.send(data)
        except PeerGone as exc:
            raise SinkGone(str(exc)) from exc


class ErrorStream(io.TextIOBase):
    """``wsgi.errors``: lines go to the front's logging as LOG frames."""

    def __init__(self, pipe: WorkerPipe) -> None:
        self._pipe = pipe
        self._buf: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf.append(s)
        if "\n" in s:
            self.flush()
        return len(s)

    def flush(self) -> None:
        if self._buf:
            text, self._buf = "".join(self._buf), []
            try:
                self._pipe.send(protocol.encode_log(logging.ERROR, text.rstrip("\n")))
            except PeerGone:
                pass


def _body_stream(pipe: WorkerPipe, request: protocol.Request) -> BinaryIO:
    if request.body is not None:
        return io.BytesIO(request.body)
    if request.body_length == 0:
        return io.BytesIO()
    # A spooled upload: our own descriptor of the front's unlinked temp file.
    # The file offset is shared with the front, so rewind.
    stream = open(pipe.take_fd(), "rb", buffering=256 * 1024)
    stream.seek(0)
    return stream


def serve_slot(app: Callable[..., Any], pipe: WorkerPipe, multithread: bool) -> None:
    """Serve requests on one connection until the front hangs up."""
    errors = ErrorStream(pipe)

    def log_error(message: str) -> None:  # (an app's own errors go as APP_ERROR, by its sink)
        errors.write(message if message.endswith("\n") else message + "\n")

    forget = pipe.conn.forget  # (pipe.forget, one call less a request)
    while True:
        event = pipe.next_event()
        if event is None:
            return
        if isinstance(event, protocol.Rejected):
            _reject(pipe, event, log_error)
            continue
        if not isinstance(event, protocol.Request):
            raise protocol.ProtocolError(f"worker received unexpected {type(event).__name__}")
        body = _body_stream(pipe, event)
        head = event.head  # (environ.HEAD_FIELDS: method first, direct last)
        try:
            environ = environ_from_head(head, body, errors, multithread, True, FileWrapper, event.body_length)
        except (UnderscoreHeader, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            # A head the app must not see (or a garbled one): this request fails, the worker lives on.
            body.close()
            status = 400 if isinstance(exc, UnderscoreHeader) else 500
            if status == 500:
                log_error(f"a2wsgi_mp: could not build the environ: {exc!r}")
            _answer(pipe, event.rid, status, str(exc) if status == 400 else "Internal Server Error")
            pipe.forget(event.rid)
            continue
        sink = _Sink(pipe, event.rid, head[10] and head[0] != "HEAD")
        try:
            run_wsgi(app, environ, sink, sink.log_error)
            if not sink.finished:  # cancelled by the client: acknowledge
                sink.abort(protocol.CLIENT_LEFT)
        except SinkGone:
            return
        finally:
            body.close()
            forget(event.rid)


def _answer(pipe: WorkerPipe, rid: int, status: int, text: str) -> None:
    body, headers = plain_reply(text, [CLOSE])
    try:
        pipe.send(protocol.encode_start(rid, status, headers, body, True))
    except PeerGone:
        pass  # the front hung up: the next read sees EOF


def _reject(pipe: WorkerPipe, event: protocol.Rejected, log_error: Callable[[str], None]) -> None:
    """A frame the decoder skipped: fail its request (if it names one) and go on."""
    log_error(f"a2wsgi_mp: worker skipped a bad frame (kind {event.kind}): {event.reason}")
    if event.kind not in (protocol.Kind.REQUEST, protocol.Kind.REQUEST_SHM):
        return
    pipe.drop_fds()  # a spooled body's descriptor came with the frame; nobody will read it
    if event.rid is not None:
        if event.oversized:
            _answer(pipe, event.rid, 431, "Request Header Fields Too Large")
        else:
            _answer(pipe, event.rid, 500, "Internal Server Error: the request did not reach the worker intact")
        pipe.forget(event.rid)


def _serve_or_die(app: Callable[..., Any], pipe: WorkerPipe) -> None:
    # A broken slot thread must take the process down, or the front would keep
    # a connection that nobody serves.
    try:
        serve_slot(app, pipe, True)
    except BaseException:
        traceback.print_exc()
        os._exit(1)


def tie_to_front(front_fd: int, parent_pid: int) -> None:
    """Never outlive the front, but survive the zygote.

    With a pidfd of the front (Linux >= 5.3) the worker watches the front
    itself; without one it falls back to dying with its parent (the zygote).
    """
    if front_fd >= 0:
        watch_front(front_fd)
    else:
        die_with_parent(parent_pid)


def watch_rss(limit: int) -> None:
    """End this worker as soon as its RSS passes ``limit`` bytes (``max_rss_hard``).

    A daemon thread samples :data:`own_rss` every :data:`RSS_CHECK_INTERVAL`
    seconds; past the limit it writes the report (RSS, every thread's stack)
    to the report file the front reads (:mod:`a2wsgi_mp.reportfile`) and exits with
    :data:`EXIT_RSS_HARD`.  The request in flight gets 502 from the front, which
    logs the report and starts a replacement; the memory is back at once,
    before the kernel's OOM killer picks a victim of its own.
    """

    def watch() -> NoReturn:
        while True:
            rss = own_rss()
            if rss > limit:
                reportfile.write(f"RSS {rss // 2**20} MiB passed max_rss_hard {limit // 2**20} MiB\n\n")
                reportfile.dump_stacks()
                os._exit(EXIT_RSS_HARD)
            time.sleep(RSS_CHECK_INTERVAL)

    threading.Thread(target=watch, name="a2wsgi-mp-rss-watch", daemon=True).start()


#: ``worker_sched`` -> the policy's name in :mod:`os` (looked up when used: not every platform has them).
_SCHED_POLICIES = {"batch": "SCHED_BATCH", "idle": "SCHED_IDLE"}
#: ``worker_sched="autogroup"``: the nice of the workers' autogroup (the lowest priority).
AUTOGROUP_NICE = 19
_AUTOGROUP = "/proc/self/autogroup"
_AUTOGROUP_ENABLED = "/proc/sys/kernel/sched_autogroup_enabled"


def set_worker_sched(name: str | None, zygote_pid: int | None = None) -> str | None:
    """Put this process under the CPU scheduling policy ``name`` (``PoolConfig.worker_sched``).

    Called first thing in a worker, so the threads it starts later inherit it.  Never fails the
    boot: a refused call (a seccomp profile, no such policy on this platform) is returned as a
    message for the front's log, and the worker serves under the policy it has.

    ``"autogroup"``: the zygote (``zygote_pid``) started a session of its own, so Linux put it and
    every worker it forks in an autogroup of their own (the front's is another), and the worker
    sets that group's nice to :data:`AUTOGROUP_NICE` (unprivileged: a nice is only raised; every
    worker writes the same value).  The scheduler picks between groups first, so the front's
    group wins the CPU against the workers' (docs/performance.md, "P3 and autogroup").  Written
    only in a session that is the zygote's: never to the front's group (or a shell's).
    """
    if not name or name == "normal":
        return None
    if name == "autogroup":
        return _autogroup_nice(zygote_pid)
    policy = getattr(os, _SCHED_POLICIES.get(name, ""), None)
    try:
        if policy is None or not hasattr(os, "sched_setscheduler"):
            raise OSError(f"no {_SCHED_POLICIES.get(name, name)} on this platform")
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:
        return f"worker_sched={name!r} refused ({exc}): this worker keeps its scheduling policy"
    return None


def _autogroup_nice(zygote_pid: int | None) -> str | None:
    refused = "worker_sched='autogroup' refused ({}): the workers compete with the front as with 'normal'"
    try:
        if zygote_pid is None or os.getsid(0) != zygote_pid:
            return refused.format("the zygote has no session of its own")
        with open(_AUTOGROUP, "w") as f:
            f.write(str(AUTOGROUP_NICE))
        with open(_AUTOGROUP) as f:  # read back: some sandboxed kernels take the write, then report nothing
            reported = f.read().split()
    except OSError as exc:  # no CONFIG_SCHED_AUTOGROUP (or no /proc), or refused
        return refused.format(exc)
    if reported[-2:] != ["nice", str(AUTOGROUP_NICE)]:
        return refused.format(f"{_AUTOGROUP} reads {' '.join(reported)!r} after the write")
    try:
        with open(_AUTOGROUP_ENABLED) as f:
            enabled = f.read().strip() != "0"
    except OSError:
        enabled = True
    if not enabled:
        return refused.format("kernel.sched_autogroup_enabled is 0")
    return None


def run_worker(app_ref: AppRef, socks: list[socket.socket], parent_pid: int, front_fd: int = -1,
               options: dict[str, Any] | None = None) -> NoReturn:
    """Body of a worker process; never returns.  ``front_fd``: a pidfd of the front, or -1.

    ``options`` (from the front, through the zygote): ``max_rss_hard`` (bytes, 0: off),
    ``hooks`` (the hooks module, see :mod:`a2wsgi_mp.hooks`), ``worker_id``, ``front_pid``,
    ``worker_sched`` (see :func:`set_worker_sched`).
    """
    options = options or {}
    refused = set_worker_sched(options.get("worker_sched"), parent_pid)
    tie_to_front(front_fd, parent_pid)
    reset_signals(signal.SIG_IGN)
    reportfile.install()
    pipes = [WorkerPipe(s, own_rss) for s in socks]
    if refused:
        try:
            pipes[0].send(protocol.encode_log(logging.WARNING, refused))
        except PeerGone:
            pass
    pid = os.getpid()
    try:
        # post_fork, the app, post_worker_init: a hook that raises fails the boot as the app would.
        hooks = _leaving.hooks = load_hooks(options.get("hooks"), options.get("hook_names"))
        server = _leaving.server = ServerView(int(options.get("front_pid") or parent_pid))
        me = _leaving.worker = WorkerView(pid, int(options.get("worker_id") or 0))
        hooks.call("post_fork", server, me)
        app = load_app(app_ref)
        hooks.call("post_worker_init", me)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, (AppLoadError, HookError)) else traceback.format_exc()
        for pipe in pipes:
            try:
                pipe.send(protocol.encode_boot_error(message))
            except PeerGone:
                pass
        os._exit(EXIT_BOOT_FAILED)
    if options.get("max_rss_hard"):
        watch_rss(int(options["max_rss_hard"]))
    try:
        for pipe in pipes:
            pipe.send(protocol.encode_ready(pid))
    except PeerGone:  # the front hung up while we booted (retired in a reload, or gone)
        _leaving.exit(0)
    try:
        multithread = len(pipes) > 1
        if not multithread:
            serve_slot(app, pipes[0], False)
        else:
            threads = [
                threading.Thread(target=_serve_or_die, args=(app, p), name=f"slot-{i}", daemon=True)
                for i, p in enumerate(pipes)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    _leaving.exit(0)  # the front hung up: retired, drained, or gone


def main(argv: list[str]) -> NoReturn:
    """Entry point of a spawned worker: ``APP PARENT_PID FRONT_PIDFD OPTIONS FD...``
    (FRONT_PIDFD -1: none; OPTIONS: JSON)."""
    app_ref, parent_pid, front_fd, options, *fds = argv
    close_inherited({int(front_fd), *(int(fd) for fd in fds)})
    take_inherited()
    run_worker(app_ref, [socket.socket(fileno=int(fd)) for fd in fds], int(parent_pid), int(front_fd),
               json.loads(options))

