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
from typing import Callable, Iterable, NamedTuple

from . import protocol
from .shm import MIN_CHUNK, Region, RingWriter

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


class FileHandoff(NamedTuple):
    """A FILE frame together with the descriptor that followed it.

    Whoever receives one owns ``fd`` and must close it."""

    rid: int
    status: int
    headers: list
    offset: int
    length: int
    fd: int


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
        shm_size: int = 0,
    ) -> None:
        self.sock = sock
        self.on_event = on_event
        self.on_lost = on_lost
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
                    self.on_event(event)
            finally:
                events.close()
                if credit and not self._closed and self.transport is not None:
                    self.transport.write(protocol.encode_shm_credit(credit))
            if file is not None:
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
            data, fds, _flags, _addr = socket.recv_fds(self._fd_sock, 1, _MAX_FDS, socket.MSG_CMSG_CLOEXEC)
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
        self.on_event(FileHandoff(*event, fds[0]))

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

    def _lose(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_fd_wait()
        self._fd_sock.close()
        self._close_region()
        if self.transport is not None:
            self.transport.abort()
        self.on_lost(exc)

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
        if self._closed:
            return
        self._closed = True
        self._stop_fd_wait()
        self._fd_sock.close()
        self._close_region()
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
        #: ``--ipc shm``: the slot's ring, once the front sent SHM_SETUP.
        self.ring: RingWriter | None = None

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
            elif isinstance(event, protocol.ShmCredit):
                if self.ring is None:
                    raise protocol.ProtocolError("SHM_CREDIT without a shared-memory region")
                self.ring.credit(event.nbytes)
            elif isinstance(event, protocol.RequestShm):
                ring = self.ring
                if ring is None or ring.outstanding or event.length > ring.region.size:
                    raise protocol.ProtocolError("REQUEST_SHM without an idle ring large enough")
                body = ring.region.read(0, event.length)
                self._events.append(protocol.Request(event.rid, event.head, body, event.length))
            elif isinstance(event, protocol.ShmSetup):
                if not self._fds:
                    raise protocol.ProtocolError("SHM_SETUP arrived without its memfd")
                fd = self._fds.popleft()
                try:
                    self.ring = RingWriter(Region(fd, event.size))
                finally:
                    os.close(fd)  # the mapping keeps its own
                self.ring.region.fd = -1
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

    def uses_shm(self, size: int) -> bool:
        return self.ring is not None and size >= MIN_CHUNK

    def send_shm(self, rid: int, data: bytes) -> None:
        """Move ``data`` through the ring in as many pieces as it takes."""
        ring = self.ring
        assert ring is not None
        view = memoryview(data)
        while view:
            offset, n = ring.put(view)
            if not n:  # full: wait for the front's credit (or a cancel, or EOF)
                if rid in self._cancelled:
                    return
                if self._eof:
                    raise PeerGone("the front hung up")
                self._fill()
                continue
            self.send(protocol.encode_shm_body(rid, offset, n))
            view = view[n:]

    def send_file(self, frame: bytes, rid: int, fd: int) -> None:
        """Send a FILE frame, wait for the front's FILE_ACK, then pass ``fd``.

        The descriptor waits for the ack because the front's event-loop transport
        reads with a plain ``recv``, which would silently drop it."""
        self.send(frame)
        while True:
            for i, event in enumerate(self._events):
                if isinstance(event, protocol.FileAck) and event.rid == rid:
                    del self._events[i]
                    break
            else:
                if self._eof:
                    raise PeerGone("the front hung up before taking a file")
                self._fill()
                continue
            break
        try:
            sent = socket.send_fds(self.sock, [b"F"], [fd])
        except OSError as exc:
            raise PeerGone(str(exc)) from exc
        if sent != 1:
            raise PeerGone("could not pass a file descriptor")

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        if self.ring is not None:
            self.ring.region.close()
            self.ring = None
        self.sock.close()
