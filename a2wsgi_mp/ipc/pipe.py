"""The socketpair transport: moves protocol bytes (and file descriptors).

Two ends with different manners: :class:`FrontPipe` is an asyncio protocol in
the front's event loop; :class:`WorkerPipe` is a plain blocking socket in the
worker process, where blocking is the point.  Neither knows what the bytes
mean beyond handing them to :class:`~a2wsgi_mp.ipc.protocol.Decoder`.
"""

from __future__ import annotations

import array
import asyncio
import os
import socket
from collections import deque
from typing import Callable, Iterable

from . import protocol

_RECV_SIZE = 256 * 1024
_MAX_FDS = 4
_ANCILLARY = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected (front, worker) pair of Unix stream sockets."""
    front, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return front, worker


def _unpack_fds(ancdata: list) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - (len(data) % arr.itemsize)])
            fds.extend(arr)
    return fds


# ---------------------------------------------------------------- front (asyncio)


class FrontPipe(asyncio.Protocol):
    """The front's end of one connection to a worker.

    Every decoded event goes to ``on_event``; the end of the connection (EOF,
    error, or garbage from the worker) to ``on_lost``.  Reading can be paused by
    the consumer: the worker then blocks in ``send``, which is the whole of the
    flow control for a response.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_event: Callable[[protocol.Event], None],
        on_lost: Callable[[Exception | None], None],
    ) -> None:
        self.sock = sock
        self.on_event = on_event
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._decoder = protocol.Decoder()
        self._closed = False
        # A private duplicate: asyncio owns ``sock``; fds go out through this one.
        self._fd_sock = sock.dup()

    @classmethod
    async def open(
        cls,
        sock: socket.socket,
        on_event: Callable[[protocol.Event], None],
        on_lost: Callable[[Exception | None], None],
    ) -> "FrontPipe":
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        pipe = cls(sock, on_event, on_lost)
        await loop.connect_accepted_socket(lambda: pipe, sock)
        return pipe

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        decoder = self._decoder
        decoder.feed(data)
        try:
            for event in decoder.events():
                self.on_event(event)
        except protocol.ProtocolError as exc:
            self._lose(exc)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(exc)

    def _lose(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._fd_sock.close()
        if self.transport is not None:
            self.transport.abort()
        self.on_lost(exc)

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
        if self.transport is not None and not self._closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()

    def close(self) -> None:
        """Hang up: the worker sees EOF and exits once it is idle."""
        if self._closed:
            return
        self._closed = True
        self._fd_sock.close()
        if self.transport is not None:
            self.transport.close()


# ---------------------------------------------------------------- worker (blocking)


class PeerGone(Exception):
    """The front closed the connection (or died)."""


class WorkerPipe:
    """The worker's end of one connection: blocking receive, gathered sends."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._decoder = protocol.Decoder()
        self._events: deque[protocol.Event] = deque()
        self._fds: deque[int] = deque()
        self._cancelled: set[int] = set()
        self._eof = False

    # receiving
    def _fill(self, flags: int = 0) -> bool:
        """Read once; False if nothing could be read without blocking."""
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(_RECV_SIZE, _ANCILLARY, flags)
        except BlockingIOError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            data, ancdata = b"", []
        if ancdata:
            self._fds.extend(_unpack_fds(ancdata))
        if not data:
            self._eof = True
            return True
        self._decoder.feed(data)
        for event in self._decoder.events():
            if isinstance(event, protocol.Cancel):
                self._cancelled.add(event.rid)
            else:
                self._events.append(event)
        return True

    def next_event(self) -> protocol.Event | None:
        """The next event for this worker, or None at EOF."""
        while not self._events:
            if self._eof:
                return None
            self._fill()
        return self._events.popleft()

    def take_fds(self, count: int) -> list[int]:
        if len(self._fds) < count:
            raise protocol.ProtocolError(f"expected {count} file descriptors, {len(self._fds)} arrived")
        return [self._fds.popleft() for _ in range(count)]

    def take_fd(self) -> int:
        """The descriptor that came with the last REQUEST that announced one."""
        if not self._fds:
            raise protocol.ProtocolError("a REQUEST announced a file descriptor but none arrived")
        return self._fds.popleft()

    def cancelled(self, rid: int) -> bool:
        """Has the front cancelled ``rid``?  Looks at the socket without blocking."""
        if rid in self._cancelled or self._eof:
            return True
        while not self._eof and self._fill(socket.MSG_DONTWAIT):
            pass
        return rid in self._cancelled or self._eof

    def forget(self, rid: int) -> None:
        self._cancelled.discard(rid)

    # sending
    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise PeerGone(str(exc)) from exc

    def send_parts(self, parts: Iterable[bytes]) -> None:
        """One gathered write of several buffers; the data is not concatenated."""
        views = [memoryview(p) for p in parts if len(p)]
        try:
            while views:
                sent = self.sock.sendmsg(views)
                while views and sent >= len(views[0]):
                    sent -= len(views[0])
                    views.pop(0)
                if sent:
                    views[0] = views[0][sent:]
        except OSError as exc:
            raise PeerGone(str(exc)) from exc

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self.sock.close()
