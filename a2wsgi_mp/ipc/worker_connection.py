"""The worker's end of one IPC connection, sans-IO: bytes and descriptors in,
events out, and the frames of a response.

:class:`WorkerConnection` holds the rules of the conversation as a worker (or
the zygote) sees it, so the transport (:class:`~a2wsgi_mp.ipc.worker_pipe.WorkerPipe`)
only moves bytes and descriptors and waits where a rule says to:

* control frames are handled on arrival, never queued behind a request:
  CANCEL marks its request (:meth:`~WorkerConnection.cancelled`), SHM_SETUP
  maps the ring with the memfd that came with it, SHM_CREDIT frees ring space,
  REPORT turns the RSS report on, FILE_ACK answers the FILE we sent;
* REQUEST_SHM becomes an ordinary :class:`Request` with its body copied out of
  the (idle) ring; a REQUEST's spooled body is the next received descriptor
  (:meth:`~WorkerConnection.take_fd`);
* a response's frames: :data:`PIECE`-sized BODY frames, chunks of at least
  :data:`~a2wsgi_mp.ipc.shm.MIN_CHUNK` through the ring when there is one
  (:meth:`~WorkerConnection.shm_piece`; the transport waits for credit when it
  is full), and USAGE in front of a response's last frame when REPORT asked;
* the FILE handshake: the descriptor goes only after the front's FILE_ACK
  (:meth:`~WorkerConnection.file_acked`);
* the direct stream: after our OFFER, the front's TAKE (with the client socket's
  descriptor) or KEEP is the :meth:`~WorkerConnection.offer_answer`.

The decoder is lenient: a frame it cannot use is a :class:`Rejected` event,
so a bad request fails alone; only a broken rule or a wrong version is a
:class:`~a2wsgi_mp.ipc.frames.ProtocolError`.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable

from . import protocol
from .events import (
    Cancel,
    Event,
    FileAck,
    Keep,
    Report,
    Request,
    RequestShm,
    ShmCredit,
    ShmSetup,
    Take,
)
from .frames import ProtocolError
from .shm import MIN_CHUNK, Region, RingWriter

__all__ = ["PIECE", "WorkerConnection"]

#: Larger response chunks cross the pipe as several BODY frames of this size:
#: frames stay far below MAX_PAYLOAD, and the front never holds a huge one.
PIECE = 256 * 1024

#: Without REPORT, a response's last frame carries USAGE at most this often (seconds, per process).
USAGE_EVERY = 1.0
_next_usage = 0.0

_HANDLED = frozenset((Cancel, ShmCredit, RequestShm, Report, ShmSetup, FileAck, Take, Keep))
_REQUEST = int(protocol.Kind.REQUEST)


class WorkerConnection:
    """The worker's end of one connection (a slot), or the zygote's control connection."""

    __slots__ = ("_decoder", "events", "_fds", "_cancelled", "eof", "ring", "report_rss", "_rss", "_clock", "_file",
                 "_offer")

    def __init__(self, rss: Callable[[], int] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._decoder = protocol.Decoder(lenient=True)  # a bad frame fails one request, not the worker
        #: What the worker's loop takes, in order (``popleft``): requests, rejected frames, SPAWNs.
        self.events: deque[Event] = deque()
        #: Descriptors received (SCM_RIGHTS), in order, not yet taken.
        self._fds: deque[int] = deque()
        self._cancelled: set[int] = set()
        #: The front hung up (or died).
        self.eof = False
        #: ``--ipc shm``: the slot's ring, once the front sent SHM_SETUP.
        self.ring: RingWriter | None = None
        #: The front asked (REPORT) for our RSS with every response's last frame.
        self.report_rss = False
        #: How to read our RSS (None: never reported), and the time.
        self._rss = rss
        self._clock = clock
        #: The request whose FILE frame we sent: None, or [rid, acked].
        self._file: list | None = None
        #: The request whose OFFER we sent: None, or [rid, answer] (answer: None
        #: until it comes, then (fd, chunked) for a TAKE or () for a KEEP).
        self._offer: list | None = None

    # ------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | memoryview, fds: Iterable[int] = ()) -> None:
        """Bytes read from the front (empty: EOF) and the descriptors that came with them.

        ``data`` may be a view of the transport's receive buffer: nothing of it is
        kept (the decoder copies what it cannot decode yet)."""
        if fds:
            self._fds.extend(fds)
        if not data:
            self.eof = True
            return
        queue = self.events
        if not queue:  # (the usual case: decode straight into the queue)
            self._decoder.receive(data, queue)  # type: ignore[arg-type]
            for event in queue:
                if event.__class__ in _HANDLED:
                    break
            else:
                return
            events = list(queue)
            queue.clear()
        else:
            events = []
            self._decoder.receive(data, events)
        append = queue.append
        for event in events:
            if event.__class__ in _HANDLED:
                request = self._control(event)
                if request is not None:
                    append(request)
                continue
            append(event)

    def whole_request(self, data: bytes | memoryview) -> Request | None:
        """``data`` as a :class:`Request` when it is exactly one well-formed REQUEST frame
        and nothing else is queued or pending (:meth:`Decoder.decode_one`): a worker's
        usual read, past the event queue.  None otherwise (nothing consumed): then
        :meth:`receive_data` it, which also turns a malformed frame into its
        :class:`Rejected`.  The descriptors of a read belong to the general way."""
        if self.events:
            return None
        request: Request | None = self._decoder.decode_one(data, _REQUEST)  # type: ignore[assignment]
        return request

    def next_event(self) -> Event | None:
        """The next queued event, or None if none is queued (then read more, unless :attr:`eof`)."""
        return self.events.popleft() if self.events else None

    def take_fd(self) -> int:
        """The descriptor that came with the last REQUEST that announced one (a spooled body)."""
        if not self._fds:
            raise ProtocolError("a REQUEST announced a file descriptor but none arrived")
        return self._fds.popleft()

    def take_fds(self, count: int) -> list[int]:
        """``count`` descriptors that came with a frame (the zygote's SPAWN)."""
        if len(self._fds) < count:
            raise ProtocolError(f"expected {count} file descriptors, {len(self._fds)} arrived")
        return [self._fds.popleft() for _ in range(count)]

    def drop_fds(self) -> None:
        """Close the descriptors that came with a frame that could not be used."""
        while self._fds:
            os.close(self._fds.popleft())

    def cancelled(self, rid: int) -> bool:
        """Has the front cancelled ``rid`` (or hung up)?"""
        return rid in self._cancelled or self.eof

    def forget(self, rid: int) -> None:
        """Request ``rid`` is over."""
        self._cancelled.discard(rid)

    # ------------------------------------------------------------ a response's frames

    def start(self, rid: int, status: int, headers: list, body: bytes, done: bool) -> bytes | None:
        """A START frame with the first chunk (and USAGE in front when it is the
        last frame); None when the chunk is too big for it (more than a
        :data:`PIECE`, or one for the ring): then send ``start(..., b"", False)``,
        the chunk as :meth:`body` frames, and :meth:`end` if ``done``."""
        size = len(body)
        if size > PIECE or (size >= MIN_CHUNK and self.ring is not None):
            return None
        frame = protocol.encode_start(rid, status, headers, body, done)
        return self._last(frame) if done else frame

    def uses_shm(self, size: int) -> bool:
        return self.ring is not None and size >= MIN_CHUNK

    def body(self, rid: int, chunk: bytes) -> list[tuple[bytes, bytes | memoryview]]:
        """The BODY frames of an inline chunk: (header, data) pairs, each for one gathered write."""
        if len(chunk) <= PIECE:
            return [(protocol.encode_body_header(rid, len(chunk)), chunk)]
        frames: list[tuple[bytes, bytes | memoryview]] = []
        view = memoryview(chunk)
        for i in range(0, len(view), PIECE):
            piece = view[i : i + PIECE]
            frames.append((protocol.encode_body_header(rid, len(piece)), piece))
        return frames

    def shm_piece(self, rid: int, view: memoryview) -> tuple[bytes, int]:
        """Copy as much of ``view`` into the ring as fits: its SHM_BODY frame and
        its length.  ``(b"", 0)``: the ring is full; read (credit comes) and retry."""
        ring = self.ring
        assert ring is not None
        offset, n = ring.put(view)
        if not n:
            return b"", 0
        return protocol.encode_shm_body(rid, offset, n), n

    def end(self, rid: int) -> bytes:
        return self._last(protocol.encode_end(rid))

    def abort(self, rid: int, reason: str) -> bytes:
        return self._last(protocol.encode_abort(rid, reason))

    def file(self, rid: int, status: int, headers: list, offset: int, length: int) -> bytes:
        """A FILE frame; its descriptor may go once :meth:`file_acked` says so."""
        self._file = [rid, False]
        return self._last(protocol.encode_file(rid, status, headers, offset, length))

    def file_acked(self, rid: int) -> bool:
        """Has the front answered our FILE with FILE_ACK?  (Then the handshake is over.)"""
        file = self._file
        if file is None or file[0] != rid:
            raise RuntimeError(f"no FILE of request {rid} awaits an ack")
        if file[1]:
            self._file = None
            return True
        return False

    def offer(self, rid: int) -> bytes:
        """An OFFER to write request ``rid``'s body to the client ourselves; wait
        for :meth:`offer_answer` before sending anything more of it."""
        self._offer = [rid, None, False]
        return protocol.encode_offer(rid)

    def abandon_offer(self, rid: int) -> None:
        """Stop waiting for the answer (the front cancelled the request): it is
        dropped when it comes (a TAKE's descriptor closed)."""
        offer = self._offer
        if offer is not None and offer[0] == rid:
            offer[2] = True

    def offer_answer(self, rid: int) -> tuple[int, bool] | tuple[()] | None:
        """The front's answer to our OFFER: ``(fd, chunked)`` for a TAKE (the fd is
        ours to close), ``()`` for a KEEP, None while it has not come."""
        offer = self._offer
        if offer is None or offer[0] != rid or offer[2]:
            raise RuntimeError(f"no OFFER of request {rid} awaits an answer")
        if offer[1] is None:
            return None
        self._offer = None
        answer: tuple[int, bool] | tuple[()] = offer[1]
        return answer

    def direct(self, rid: int, written: int, tail: bytes, done: bool) -> bytes:
        """What we wrote to the client after a TAKE (``done``: the whole body; a last frame)."""
        frame = protocol.encode_direct(rid, written, tail, done)
        return self._last(frame) if done else frame

    def _last(self, frame: bytes) -> bytes:
        """A response's last frame, preceded (same write) by our RSS: every time if
        the front asked (REPORT: ``max_rss``), else at most every :data:`USAGE_EVERY`
        seconds in this process (a death report's "last RSS"; a sample costs
        ~4 us, a clock read ~0.05 us)."""
        global _next_usage
        rss = self._rss
        if rss is None:
            return frame
        if not self.report_rss:
            now = self._clock()
            if now < _next_usage:
                return frame
            _next_usage = now + USAGE_EVERY
        return protocol.encode_usage(rss()) + frame

    # ------------------------------------------------------------ internals

    def _control(self, event: Event) -> Event | None:
        """Apply a control frame; what to queue instead of it (None: nothing)."""
        if isinstance(event, Cancel):
            self._cancelled.add(event.rid)
        elif isinstance(event, ShmCredit):
            if self.ring is None:
                raise ProtocolError("SHM_CREDIT without a shared-memory region")
            if event.nbytes > self.ring.outstanding:
                raise ProtocolError(f"credit of {event.nbytes} bytes for {self.ring.outstanding} outstanding")
            self.ring.credit(event.nbytes)
        elif isinstance(event, RequestShm):
            ring = self.ring
            if ring is None or ring.outstanding or event.length > ring.region.size:
                raise ProtocolError("REQUEST_SHM without an idle ring large enough")
            return Request(event.rid, event.head, ring.region.read(0, event.length), event.length)
        elif isinstance(event, Report):
            self.report_rss = event.rss
        elif isinstance(event, ShmSetup):
            self._map_ring(event.size)
        elif isinstance(event, (Take, Keep)):
            offer = self._offer
            if offer is None or offer[0] != event.rid or offer[1] is not None:
                raise ProtocolError(f"{type(event).__name__} for request {event.rid}, whose OFFER awaits none")
            if isinstance(event, Take):
                if not self._fds:
                    raise ProtocolError("TAKE arrived without the client's socket")
                offer[1] = (self._fds.pop(), event.chunked)  # (the newest: it came with this frame)
            else:
                offer[1] = ()
            if offer[2]:  # abandoned: nobody takes it
                if offer[1]:
                    os.close(offer[1][0])
                self._offer = None
        elif isinstance(event, FileAck):
            file = self._file
            if file is None or file[0] != event.rid or file[1]:
                raise ProtocolError(f"FILE_ACK for request {event.rid}, whose FILE is not awaiting one")
            file[1] = True
        return None

    def _map_ring(self, size: int) -> None:
        if self.ring is not None:
            raise ProtocolError("a second SHM_SETUP on one connection")
        if not self._fds:
            raise ProtocolError("SHM_SETUP arrived without its memfd")
        fd = self._fds.popleft()
        try:
            region = Region(fd, size)
        except (ValueError, OSError) as exc:
            raise ProtocolError(f"cannot map the SHM_SETUP region of {size} bytes: {exc}") from None
        finally:
            os.close(fd)  # the mapping keeps its own
        region.fd = -1
        self.ring = RingWriter(region)

    def close(self) -> None:
        """Close the descriptors not taken and unmap the ring."""
        offer = self._offer
        if offer is not None and offer[1]:
            os.close(offer[1][0])
        self._offer = None
        self.drop_fds()
        if self.ring is not None:
            self.ring.region.close()
            self.ring = None
