"""The front's end of the socketpair transport: an asyncio protocol.

It moves protocol bytes (and, for spooled bodies, file descriptors) and knows
nothing of what they mean beyond handing them to
:class:`~a2wsgi_mp.ipc.protocol.Decoder`.  The worker's end is
:mod:`a2wsgi_mp.ipc.worker_pipe`.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Callable, Protocol

from . import protocol
from .fds import FileHandoff, pair
from .shm import MIN_CHUNK, Region

__all__ = ["FileHandoff", "FrontPipe", "REQUEST_EVENTS", "RequestSink", "pair"]

#: The events that belong to the request in flight: they go straight to its sink.
REQUEST_EVENTS = frozenset((protocol.Start, protocol.Body, protocol.End, protocol.Abort, protocol.AppError,
                            FileHandoff))


class RequestSink(Protocol):
    """Whoever owns the request in flight on a connection (the pool's ``Exchange``)."""

    rid: int

    def feed(self, event: Any) -> None: ...

#: Bytes per read when salvaging what a dead worker left in the socket.
SALVAGE_READ = 256 * 1024


class FrontPipe(asyncio.Protocol):
    """The front's end of one connection to a worker.

    A response's events go straight to the request's owner, :attr:`exchange`
    (bound and cleared by the dispatcher); every other event (READY,
    BOOT_ERROR, LOG, USAGE, anything stale) to ``on_event``; the end of the
    connection (EOF, error, or garbage from the worker) to ``on_lost``.
    Reading can be paused by the consumer: the worker then blocks in ``send``,
    which is the whole of the flow control for a response.

    Whatever ends the connection, what the worker wrote before is read first
    (:meth:`_salvage`): a worker's death never discards frames it already sent.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_event: Callable[[protocol.Event], None],
        on_lost: Callable[[Exception | None], None],
        shm_size: int = 0,
    ) -> None:
        self.sock = sock
        self.on_event = on_event
        self.on_lost = on_lost
        #: The request in flight on this connection, if any: its events go there.
        self.exchange: RequestSink | None = None
        self.transport: asyncio.Transport | None = None
        self._decoder = protocol.Decoder()
        self._closed = False
        # A private duplicate: asyncio owns ``sock``; fds go out through this one.
        self._fd_sock = sock.dup()
        #: The consumer asked to pause reading (flow control).
        self._paused = False
        #: A FILE frame whose descriptor we wait for (reading the transport is paused).
        self._file: protocol.File | None = None
        #: ``--ipc shm``: the ring's size, and the ring once the worker is READY.
        self._shm_size = shm_size
        self.region: Region | None = None
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
    ) -> "FrontPipe":
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        pipe = cls(sock, on_event, on_lost, shm_size)
        await loop.connect_accepted_socket(lambda: pipe, sock)
        return pipe

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        decoder = self._decoder
        decoder.feed(data)
        file: protocol.File | None = None
        credit = 0
        events = decoder.events()
        try:
            try:
                for event in events:
                    if isinstance(event, protocol.ShmBody):
                        if self.region is None:
                            raise protocol.ProtocolError("SHM_BODY without a shared-memory region")
                        try:
                            data = self.region.read(event.offset, event.length)
                        except ValueError as exc:
                            raise protocol.ProtocolError(str(exc)) from None
                        credit += event.length
                        event = protocol.Body(event.rid, data)
                    elif isinstance(event, protocol.File):
                        file = event  # the worker sends nothing more until it has our FILE_ACK
                        break
                    elif isinstance(event, protocol.Ready) and self._shm_size and self.region is None:
                        self._setup_shm()
                    self._route(event)
            finally:
                events.close()
                if credit and not self._closed and not self._salvaging and self.transport is not None:
                    self.transport.write(protocol.encode_shm_credit(credit))
            if file is not None and not self._salvaging:  # (salvaging: its descriptor never comes)
                self._expect_fd(file)
        except protocol.ProtocolError as exc:
            self._lose(exc)

    def put_request_body(self, body: bytes) -> bool:
        """Copy a request body into this (idle) slot's ring; False if it should go inline."""
        region = self.region
        if region is None or not MIN_CHUNK <= len(body) <= region.size:
            return False
        region.map[: len(body)] = body
        return True

    def _setup_shm(self) -> None:
        """Give the worker its ring, before anything else is sent on this slot."""
        self.region = Region.create(self._shm_size)
        self.send_with_fds(protocol.encode_shm_setup(self._shm_size), [self.region.fd])
        self.region.release_fd()

    def _expect_fd(self, event: protocol.File) -> None:
        """Stop the transport (whose plain ``recv`` would drop a descriptor), ask
        the worker for the file's fd, and take it with ``recvmsg`` on our dup."""
        if self._decoder.pending:
            raise protocol.ProtocolError("data after a FILE frame, before its FILE_ACK")
        assert self.transport is not None
        self._file = event
        self.transport.pause_reading()
        self.transport.write(protocol.encode_file_ack(event.rid))
        asyncio.get_running_loop().add_reader(self._fd_sock.fileno(), self._read_fd)

    def _read_fd(self) -> None:
        event = self._file
        if event is None or self._closed:
            return
        try:
            data, fds, _flags, _addr = socket.recv_fds(self._fd_sock, 1, 1, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        self._stop_fd_wait()
        if not data or len(fds) != 1 or data != b"F":
            for fd in fds:
                os.close(fd)
            self._lose(protocol.ProtocolError("a FILE frame's descriptor did not arrive") if data else None)
            return
        if not self._paused and self.transport is not None:
            self.transport.resume_reading()
        self._route(FileHandoff(*event, fds[0]))

    def _route(self, event: protocol.Event | FileHandoff) -> None:
        """A response's event to its request, anything else to ``on_event``."""
        exchange = self.exchange
        if exchange is not None and event.__class__ in REQUEST_EVENTS and event[0] == exchange.rid:
            exchange.feed(event)
        else:
            self.on_event(event)  # type: ignore[arg-type]

    def _stop_fd_wait(self) -> None:
        if self._file is not None:
            self._file = None
            try:
                asyncio.get_running_loop().remove_reader(self._fd_sock.fileno())
            except (RuntimeError, ValueError, OSError):
                pass

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(exc)

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
        end went away, and decode it (the ring's bytes too) before we close.

        The transport reads only while it is not paused (flow control, a FILE
        wait), and an asyncio transport drops what it has not read when a write
        fails (EPIPE) or it is closed.  So when a worker dies, or its exit is
        reported before its EOF, its last frames may still wait in the socket:
        a response that was complete when it died must still reach the client
        whole.  Reads until EOF (its end is gone), ECONNRESET (gone with bytes of
        ours unread: :attr:`peer_reset`) or EAGAIN (it is not gone: nothing more
        is owed now) — at most the socket's buffer.  Nothing is written meanwhile.
        """
        if self._salvaging or self._closed or self._file is not None:  # (a descriptor is due first)
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
        self._close_region()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        return True

    def _close_region(self) -> None:
        if self.region is not None:
            self.region.close()
            self.region = None

    # sending
    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, data: bytes) -> None:
        if not self._closed and self.transport is not None:
            self.transport.write(data)

    def send_with_fds(self, data: bytes, fds: list[int]) -> None:
        """Send a (small) frame together with file descriptors.

        Only called on an idle connection, whose send buffer is therefore empty,
        so the frame leaves in one ``sendmsg``; anything else is a bug, said loudly.
        """
        assert self.transport is not None and self.transport.get_write_buffer_size() == 0
        sent = socket.send_fds(self._fd_sock, [data], fds)
        if sent != len(data):
            raise RuntimeError(f"short sendmsg with fd: {sent} of {len(data)} bytes")

    def pause(self) -> None:
        self._paused = True
        if self.transport is not None and not self._closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        self._paused = False
        if self.transport is not None and not self._closed and self._file is None:
            self.transport.resume_reading()

    def close(self) -> None:
        """Hang up: the worker sees EOF and exits once it is idle."""
        self._shut(abort=False)
