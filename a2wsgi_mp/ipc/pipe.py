"""The front's end of the socketpair transport: an asyncio protocol.

It moves bytes and file descriptors between the socket and its
:class:`~a2wsgi_mp.ipc.front_connection.FrontConnection`, which holds every rule
of the conversation (the ring, the FILE handshake, CANCEL, REPORT, which frame
may come when).  The worker's end is :mod:`a2wsgi_mp.ipc.worker_pipe`.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Callable, Protocol

from . import protocol
from .fds import FileHandoff, pair
from .front_connection import FrontConnection
from .shm import Region

__all__ = ["FileHandoff", "FrontPipe", "REQUEST_EVENTS", "RequestSink", "pair"]

#: The events that belong to the request in flight: they go straight to its sink.
REQUEST_EVENTS = frozenset((protocol.Start, protocol.Body, protocol.End, protocol.Abort, protocol.AppError,
                            protocol.Offer, protocol.Direct, FileHandoff))


class RequestSink(Protocol):
    """Whoever owns the request in flight on a connection (the pool's ``Exchange``)."""

    rid: int

    def feed(self, event: Any) -> None: ...

#: Bytes per read when salvaging what a dead worker left in the socket.
SALVAGE_READ = 256 * 1024


class FrontPipe(asyncio.Protocol):
    """The front's end of one connection to a worker (or the zygote).

    A response's events go straight to the request's owner, :attr:`exchange`
    (bound and cleared by the dispatcher); every other event (READY,
    BOOT_ERROR, LOG, USAGE, anything stale) to ``on_event``, in order; the end
    of the connection (EOF, error, or garbage from the worker) to ``on_lost``,
    once, after every event of the bytes that came before it.  Reading can be
    paused by the consumer: the worker then blocks in ``send``, which is the
    whole of the flow control for a response.

    Whatever ends the connection, what the worker wrote before is read first
    (:meth:`_salvage`): a worker's death never discards frames it already sent.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_event: Callable[[protocol.Event], None],
        on_lost: Callable[[Exception | None], None],
        shm_size: int = 0,
        report_rss: bool = False,
    ) -> None:
        self.sock = sock
        self.on_event = on_event
        self.on_lost = on_lost
        #: The request in flight on this connection, if any: its events go there.
        self.exchange: RequestSink | None = None
        self.transport: asyncio.Transport | None = None
        self.conn = FrontConnection(shm_size, report_rss)
        self._closed = False
        # A private duplicate: asyncio owns ``sock``; fds go out (and a FILE's comes in) through this one.
        self._fd_sock = sock.dup()
        #: The consumer asked to pause reading (flow control).
        self._paused = False
        #: Reading the transport is stopped for a FILE frame's descriptor.
        self._fd_wait = False
        #: Reading what is left before closing: nothing is written meanwhile.
        self._salvaging = False
        #: The worker's end went away with bytes we sent it unread (ECONNRESET,
        #: or EPIPE): it never read all of what was sent last.
        self.peer_reset = False

    @classmethod
    async def open(
        cls,
        sock: socket.socket,
        on_event: Callable[[protocol.Event], None],
        on_lost: Callable[[Exception | None], None],
        shm_size: int = 0,
        report_rss: bool = False,
    ) -> "FrontPipe":
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        pipe = cls(sock, on_event, on_lost, shm_size, report_rss)
        await loop.connect_accepted_socket(lambda: pipe, sock)
        return pipe

    @property
    def region(self) -> Region | None:
        """``--ipc shm``: the slot's ring, once the worker is READY."""
        return self.conn.region

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        events = conn.receive_data(data)
        if conn.outbox:  # credit, FILE_ACK, the ring's setup: before anything an event may lead to
            self._flush()
        on_event = self.on_event
        for event in events:  # (_route() inline: the hot path)
            exchange = self.exchange
            if exchange is not None and event.__class__ in REQUEST_EVENTS and event[0] == exchange.rid:
                exchange.feed(event)
            else:
                on_event(event)
        if conn.error is not None:
            self._lose(conn.error)
        elif conn.awaiting_fd and not self._salvaging:  # (salvaging: its descriptor never comes)
            self._expect_fd()

    def eof_received(self) -> bool:
        error = self.conn.receive_eof()
        if error is not None:
            self._lose(error)
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(exc)

    # ------------------------------------------------------------ descriptors in

    def _expect_fd(self) -> None:
        """Stop the transport (whose plain ``recv`` would drop a descriptor) and
        take the FILE's descriptor with ``recvmsg`` on our dup."""
        if self._closed or self.transport is None:
            return
        self._fd_wait = True
        self.transport.pause_reading()
        asyncio.get_running_loop().add_reader(self._fd_sock.fileno(), self._read_fd)

    def _read_fd(self) -> None:
        if not self._fd_wait or self._closed:
            return
        try:
            data, fds, _flags, _addr = socket.recv_fds(self._fd_sock, 1, 1, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        self._stop_fd_wait()
        try:
            handoff = self.conn.receive_fd(data, fds)
        except protocol.ProtocolError as exc:
            self._lose(exc)
            return
        if not self._paused and self.transport is not None:
            self.transport.resume_reading()
        self._route(handoff)

    def _route(self, event: protocol.Event | FileHandoff) -> None:
        """A response's event to its request, anything else to ``on_event``."""
        exchange = self.exchange
        if exchange is not None and event.__class__ in REQUEST_EVENTS and event[0] == exchange.rid:
            exchange.feed(event)
        else:
            self.on_event(event)  # type: ignore[arg-type]  # (a stale FileHandoff: the supervisor closes it)

    def _stop_fd_wait(self) -> None:
        if self._fd_wait:
            self._fd_wait = False
            try:
                asyncio.get_running_loop().remove_reader(self._fd_sock.fileno())
            except (RuntimeError, ValueError, OSError):
                pass

    # ------------------------------------------------------------ bytes and descriptors out

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, data: bytes) -> None:
        if not self._closed and self.transport is not None:
            self.transport.write(data)

    def send_request(self, rid: int, head: dict | tuple, body: bytes | None, body_length: int,
                     fd: int | None = None) -> None:
        """Start request ``rid`` on this connection; the connection chooses how its body travels
        (``fd``: a spooled body's file, which the caller closes afterwards)."""
        data = self.conn.send_request(rid, head, body, body_length, fd)
        if fd is not None:
            self.send_with_fds(data, [fd])
        elif not self._closed and self.transport is not None:
            self.transport.write(data)

    def send_cancel(self, rid: int) -> None:
        """Tell the worker request ``rid``'s client left (once; nothing if it is over)."""
        if not self._closed:
            data = self.conn.send_cancel(rid)
            if data:
                self.send(data)

    def answer_offer(self, rid: int, client_fd: int | None, chunked: bool = False) -> bool:
        """Answer request ``rid``'s OFFER: TAKE with ``client_fd`` (the worker writes
        the body to it from now on), or KEEP when it is None.  False if it had to be
        KEEP (our own send buffer to the worker is not empty: the frame and its
        descriptor could not leave in one ``sendmsg``)."""
        conn = self.conn
        if self._closed or self.transport is None or conn.offered != rid:
            return False  # (the request ended meanwhile: an ABORT after our CANCEL)
        if client_fd is not None and self.transport.get_write_buffer_size() == 0:
            data = conn.send_take(rid, chunked)
            try:
                self.send_with_fds(data, [client_fd])
            except OSError as exc:
                self._lose(exc)
                return False
            return True
        self.send(conn.send_keep(rid))
        return False

    def send_with_fds(self, data: bytes, fds: list[int]) -> None:
        """Send a (small) frame together with file descriptors.

        Only called on an idle connection, whose send buffer is therefore empty,
        so the frame leaves in one ``sendmsg``; anything else is a bug, said loudly.
        """
        assert self.transport is not None and self.transport.get_write_buffer_size() == 0
        sent = socket.send_fds(self._fd_sock, [data], fds)
        if sent != len(data):
            raise RuntimeError(f"short sendmsg with fd: {sent} of {len(data)} bytes")

    def _flush(self) -> None:
        """Send the connection's own frames; the descriptors they carry are closed once sent."""
        outbox = self.conn.outbox
        while outbox:
            data, fds = outbox.pop(0)
            if not fds:
                if not self._salvaging:
                    self.send(data)
                continue
            try:
                if not self._closed and not self._salvaging:
                    self.send_with_fds(data, fds)
            finally:
                for fd in fds:
                    os.close(fd)

    # ------------------------------------------------------------ flow control and end

    def pause(self) -> None:
        self._paused = True
        if self.transport is not None and not self._closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        self._paused = False
        if self.transport is not None and not self._closed and not self._fd_wait:
            self.transport.resume_reading()

    def close(self) -> None:
        """Hang up: the worker sees EOF and exits once it is idle."""
        self._shut(abort=False)

    def fail(self, exc: Exception) -> None:
        """The connection is unusable (a send failed): end it as if the worker had gone."""
        self._lose(exc)

    def _lose(self, exc: Exception | None) -> None:
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            self.peer_reset = True
        if self._shut(abort=True):
            self.on_lost(exc)

    def _salvage(self) -> None:
        """Read, on our duplicate of the socket, what the worker wrote before its
        end went away, and hand it to the connection (the ring's bytes too)
        before we close.

        The transport reads only while it is not paused (flow control, a FILE
        wait), and an asyncio transport drops what it has not read when a write
        fails (EPIPE) or it is closed.  So when a worker dies, or its exit is
        reported before its EOF, its last frames may still wait in the socket:
        a response that was complete when it died must still reach the client
        whole.  Reads until EOF (its end is gone), ECONNRESET (gone with bytes of
        ours unread: :attr:`peer_reset`) or EAGAIN (it is not gone: nothing more
        is owed now) — at most the socket's buffer.  Nothing is written meanwhile.
        """
        if self._salvaging or self._closed or self.conn.awaiting_fd:  # (a descriptor is due first)
            return
        self._salvaging = True
        try:
            while not self._closed:
                try:
                    data = self._fd_sock.recv(SALVAGE_READ)
                except (BlockingIOError, InterruptedError):
                    return
                except ConnectionResetError:
                    self.peer_reset = True
                    return
                except OSError:
                    return
                if not data:
                    return
                self.data_received(data)
        finally:
            self._salvaging = False

    def _shut(self, abort: bool) -> bool:
        """Release everything once (what the worker sent is read first); False if already done."""
        if self._closed:
            return False
        self._salvage()
        if self._closed:  # (what was salvaged ended it: garbage)
            return False
        self._closed = True
        self._stop_fd_wait()
        self._fd_sock.close()
        self.conn.close()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        return True
