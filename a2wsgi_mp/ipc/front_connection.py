"""The front's end of one IPC connection, sans-IO: bytes and descriptors in,
events out, and the frames to send back.

:class:`FrontConnection` holds every rule of the conversation as the front
sees it, so the transport (:class:`~a2wsgi_mp.ipc.pipe.FrontPipe`) only moves
bytes and descriptors:

* one request at a time: :meth:`FrontConnection.send_request` refuses a second
  while one is in flight, and a response frame must name the request in flight,
  START before BODY, nothing after its last frame (START with ``done``, END,
  ABORT, or FILE and its descriptor);
* how a request's body travels (:meth:`~FrontConnection.send_request`): a
  spooled file by descriptor, a mid-sized body through the slot's shared-memory
  ring (``--ipc shm``), anything else inline;
* after READY: the ring's SHM_SETUP (with its memfd) and, for ``max_rss``, the
  REPORT request, before anything else is sent;
* SHM_BODY pieces are copied out of the ring into ordinary :class:`Body`
  events, and their SHM_CREDIT goes back once per read;
* the FILE handshake: a FILE frame stops the stream (:attr:`awaiting_fd`), a
  FILE_ACK goes back, and :meth:`~FrontConnection.receive_fd` turns the
  descriptor that follows into a :class:`~a2wsgi_mp.ipc.fds.FileHandoff`;
* CANCEL at most once per request, and only while it is in flight;
* the direct stream: an OFFER after a START that is not ``done`` gets exactly one
  answer (:meth:`~FrontConnection.send_take`, with the client socket, or
  :meth:`~FrontConnection.send_keep`) and nothing but CANCEL is sent meanwhile;
  after a TAKE only DIRECT, APP_ERROR or ABORT may come, and a DIRECT that is
  ``done`` ends the request.

A peer that breaks a rule gets a :class:`~a2wsgi_mp.ipc.frames.ProtocolError`
(:attr:`FrontConnection.error`), after the events that came before the fault.
The same object serves the zygote's control connection (READY, BOOT_ERROR,
SPAWNED, EXITED; it never has a request in flight).

A dead worker's last frames: the transport hands over every byte it read
before EOF, and the ring stays mapped until :meth:`close`, so each complete
frame is an event before :meth:`receive_eof` reports the end
(:attr:`in_flight` and :attr:`started` then say what the request had got).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from . import protocol
from .events import (
    Abort,
    AppError,
    Body,
    BootError,
    Direct,
    End,
    Event,
    Exited,
    File,
    Log,
    Offer,
    Ready,
    ShmBody,
    Spawned,
    Start,
    Usage,
)
from .fds import FileHandoff
from .frames import ProtocolError
from .shm import MIN_CHUNK, Region

__all__ = ["FrontConnection", "Outgoing"]

#: A frame to send with the descriptors that go with it (SCM_RIGHTS); the
#: transport closes those descriptors once sent.
Outgoing = tuple[bytes, list[int]]

#: Worker -> front events that belong to no request and need no rule here.
_UNSCOPED = frozenset((Usage, Log, BootError, Spawned, Exited))


class FrontConnection:
    """The front's end of one connection to a worker slot (or to the zygote)."""

    __slots__ = ("_decoder", "_shm_size", "_report_rss", "_new_region", "region", "ready", "in_flight", "started",
                 "_cancelled", "_last", "_file", "awaiting_fd", "_stopped", "outbox", "error", "closed", "offered",
                 "direct")

    def __init__(self, shm_size: int = 0, report_rss: bool = False,
                 new_region: Callable[[int], Region] = Region.create) -> None:
        self._decoder = protocol.Decoder()
        #: ``--ipc shm``: the ring's size (0: no ring), and the ring once the worker is READY.
        self._shm_size = shm_size
        self._new_region = new_region
        self.region: Region | None = None
        #: Ask the worker for its RSS with every response (the pool has ``max_rss``).
        self._report_rss = report_rss
        self.ready = False
        #: The request on this connection, from :meth:`send_request` until its last frame.
        self.in_flight: int | None = None
        #: Its response has begun (START or FILE arrived): a loss now cuts a response.
        self.started = False
        #: The request a CANCEL was sent for.
        self._cancelled: int | None = None
        #: The previous request (an error in a FILE response's ``close()`` comes after it ended).
        self._last: int | None = None
        #: A FILE frame whose descriptor is awaited.
        self._file: File | None = None
        #: A FILE frame arrived: read nothing more until its descriptor (:meth:`receive_fd`).
        self.awaiting_fd = False
        #: Awaiting a descriptor, failed or closed: no bytes are taken (one test on the hot path).
        self._stopped = False
        #: Frames to send, in order, before anything else; see :data:`Outgoing`.
        self.outbox: list[Outgoing] = []
        #: Set once the worker broke the protocol; the connection must be dropped.
        self.error: ProtocolError | None = None
        self.closed = False
        #: The request whose OFFER awaits our TAKE or KEEP.
        self.offered: int | None = None
        #: The request whose body the worker writes to the client itself (after our TAKE, until its DIRECT).
        self.direct: int | None = None

    # ------------------------------------------------------------ receiving

    def receive_data(self, data: bytes) -> list[Event]:
        """The events of the complete frames in ``data`` (and what came before it).

        After a fault, the events before it and :attr:`error`; the frames to
        send back (credit, FILE_ACK, the ring's setup) are in :attr:`outbox`.
        """
        if self._stopped:
            if self._file is not None:
                self._fail(ProtocolError("data after a FILE frame, before its descriptor"))
            return []
        decoder = self._decoder
        events: list[Event] = []
        try:
            decoder.receive(data, events)
            late = None
        except ProtocolError as exc:
            late = exc  # (after the rules of the events before it)
        credit = 0
        checked: list[Any] = events  # (each one of the classes tested below)
        event: Any = None
        try:
            for event in checked:
                cls = event.__class__
                if cls is Start:
                    if event.rid != self.in_flight or self.started:
                        raise self._out_of_turn(event)
                    if event.done:
                        self._last = event.rid
                        self.in_flight = None  # (the hot path: _finish() inline)
                    else:
                        self.started = True
                elif cls is Body:
                    if event.rid != self.in_flight or not self.started or self.offered is not None \
                            or self.direct is not None:
                        raise self._out_of_turn(event)
                elif cls is ShmBody:
                    if event.rid != self.in_flight or not self.started:
                        raise self._out_of_turn(event)
                    data = self._read_ring(event)
                    events[_index(events, event)] = Body(event.rid, data)
                    credit += len(data)
                elif cls is End or cls is Abort:  # (an ABORT may come before any START: a cancel)
                    # (An ABORT may also answer our CANCEL while its OFFER awaits us.)
                    if event.rid != self.in_flight or (
                            cls is End and (not self.started or self.direct is not None or self.offered is not None)):
                        raise self._out_of_turn(event)
                    self._finish()
                elif cls is Offer:
                    if event.rid != self.in_flight or not self.started or self.offered is not None \
                            or self.direct is not None:
                        raise self._out_of_turn(event)
                    self.offered = event.rid
                elif cls is Direct:
                    if event.rid != self.in_flight or self.direct != event.rid:
                        raise self._out_of_turn(event)
                    self.direct = None
                    if event.done:
                        self._finish()
                elif cls in _UNSCOPED:
                    pass
                elif cls is File:
                    if event.rid != self.in_flight or self.started:
                        raise self._out_of_turn(event)
                    if checked[-1] is not event or decoder.pending or late is not None:
                        raise ProtocolError("data after a FILE frame, before its FILE_ACK")
                    self.started = True
                    self._file = event
                    self.awaiting_fd = self._stopped = True
                    self.outbox.append((protocol.encode_file_ack(event.rid), []))
                    events.pop()  # (its event is the handoff, once the descriptor is here)
                elif cls is AppError:
                    if event.rid != self.in_flight and event.rid != self._last:
                        raise self._out_of_turn(event)
                elif cls is Ready:
                    if self.ready:
                        raise ProtocolError("a second READY on one connection")
                    self.ready = True
                    self._after_ready()
                else:
                    raise ProtocolError(f"the front does not take {type(event).__name__} frames")
        except ProtocolError as exc:
            self._fail(exc)
            del events[_index(events, event):]
        if late is not None:
            self._fail(late)  # (keeps an earlier fault)
        elif credit and self.error is None:
            self.outbox.append((protocol.encode_shm_credit(credit), []))
        return events

    def receive_fd(self, data: bytes, fds: list[int]) -> FileHandoff:
        """What arrived (by ``recvmsg``) after our FILE_ACK: the file's descriptor.

        The caller owns the returned handoff's ``fd``; on a ProtocolError the
        descriptors are closed here.
        """
        file = self._file
        if file is None or self.error is not None:
            for fd in fds:
                os.close(fd)
            raise self._fail(ProtocolError("a descriptor nobody asked for"))
        if data != b"F" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            if not data:
                raise self._fail(ProtocolError("the worker hung up before passing its file"))
            raise self._fail(ProtocolError("a FILE frame's descriptor did not arrive"))
        self._file = None
        self.awaiting_fd = self._stopped = False
        self._finish()
        return FileHandoff(*file, fds[0])

    def receive_eof(self) -> ProtocolError | None:
        """The worker closed its end: an error if it stopped inside a frame or a handshake.

        Everything it sent before was an event already; :attr:`in_flight` and
        :attr:`started` still say what its request had got."""
        if self.error is not None:
            return self.error
        if self._decoder.pending:
            return self._fail(ProtocolError(f"the worker hung up {self._decoder.pending} bytes into a frame"))
        if self._file is not None:
            return self._fail(ProtocolError("the worker hung up before passing its file"))
        return None

    # ------------------------------------------------------------ sending

    def send_request(self, rid: int, head: dict | tuple, body: bytes | None, body_length: int,
                     fd: int | None = None) -> bytes:
        """The frame that starts request ``rid``.

        ``fd``: the body is in that file (a spooled upload): send the frame
        together with it (SCM_RIGHTS); the caller closes its descriptor after.  Otherwise ``body`` goes
        through the ring when the connection has one and it is worth it
        (:data:`~a2wsgi_mp.ipc.shm.MIN_CHUNK` up to the ring's size: the ring is
        idle between requests), else inline.
        """
        if self.in_flight is not None:
            raise RuntimeError(f"request {rid} sent while request {self.in_flight} is in flight")
        self.in_flight = rid  # (started is False between requests)
        if fd is not None:
            return protocol.encode_request(rid, head, None, body_length)
        region = self.region
        if region is not None and body is not None and MIN_CHUNK <= len(body) <= region.size:
            region.map[: len(body)] = body
            return protocol.encode_request_shm(rid, head, len(body))
        return protocol.encode_request(rid, head, body, body_length)

    def send_cancel(self, rid: int) -> bytes:
        """The CANCEL of request ``rid``; empty if it is over or already cancelled."""
        if rid != self.in_flight or self._cancelled == rid or self.closed:
            return b""
        self._cancelled = rid
        return protocol.encode_cancel(rid)

    def send_take(self, rid: int, chunked: bool) -> bytes:
        """The TAKE answering request ``rid``'s OFFER; the client socket's descriptor
        must go in the same ``sendmsg``.  The worker writes the body from now on."""
        self._answer(rid)
        self.direct = rid
        return protocol.encode_take(rid, chunked)

    def send_keep(self, rid: int) -> bytes:
        """The KEEP answering request ``rid``'s OFFER: the body comes as BODY frames."""
        self._answer(rid)
        return protocol.encode_keep(rid)

    def _answer(self, rid: int) -> None:
        if self.offered != rid or rid != self.in_flight:
            raise RuntimeError(f"no OFFER of request {rid} awaits an answer")
        self.offered = None

    # ------------------------------------------------------------ end

    def close(self) -> None:
        """Unmap the ring.  Call once the transport is closed: a worker's last
        SHM_BODY frames must have been read out of it first."""
        self.closed = self._stopped = True
        if self.region is not None:
            self.region.close()
            self.region = None

    # ------------------------------------------------------------ internals

    def _finish(self) -> None:
        self._last = self.in_flight
        self.in_flight = None
        self.started = False
        self.offered = self.direct = None

    def _after_ready(self) -> None:
        """Set the slot up before any request: its ring (memfd by SCM_RIGHTS), then REPORT."""
        if self._shm_size and self.region is None:
            region = self.region = self._new_region(self._shm_size)
            fd, region.fd = region.fd, -1  # the message owns it now: the transport closes it once sent
            self.outbox.append((protocol.encode_shm_setup(self._shm_size), [fd]))
        if self._report_rss:
            self.outbox.append((protocol.encode_report(True), []))

    def _read_ring(self, event: ShmBody) -> bytes:
        if self.region is None:
            raise ProtocolError("SHM_BODY without a shared-memory region")
        try:
            return self.region.read(event.offset, event.length)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None

    def _out_of_turn(self, event: Event) -> ProtocolError:
        where = f"request {self.in_flight}" if self.in_flight is not None else "no request"
        state = " (response started)" if self.started else ""
        return ProtocolError(f"{type(event).__name__} for request {event[0]} out of turn: {where} in flight{state}")

    def _fail(self, exc: ProtocolError) -> ProtocolError:
        if self.error is None:
            self.error = exc
        self._stopped = True
        return self.error


def _index(events: list[Event], event: Event) -> int:
    """Where ``event`` (that very object) is in ``events``: for the rare paths, so
    the common one needs no ``enumerate``."""
    for k, e in enumerate(events):
        if e is event:
            return k
    raise ValueError("not in the list")
