"""Decoding the IPC protocol: bytes in, events out (sans-IO).

A :class:`Decoder` takes bytes in pieces of any size and yields the events of
the complete frames, checking every field's type so a malformed frame is a
:class:`~a2wsgi_mp.ipc.frames.ProtocolError` here, never a crash later.
Import it from :mod:`a2wsgi_mp.ipc.protocol`, the protocol's entry point.
"""

from __future__ import annotations

from typing import Any, Generator

import msgpack

from .events import FRAMES, Body, Event, Kind, Rejected, new_event
from .frames import HEADER, HEADER_SIZE, MAX_PAYLOAD, RID, VERSION, ProtocolError

_BODY = int(Kind.BODY)
_REQUEST_LIKE = (int(Kind.REQUEST), int(Kind.REQUEST_SHM))


class Decoder:
    """Turns a byte stream into events.

    ``feed()`` takes bytes as they arrive, in pieces of any size; ``events()``
    yields every complete event.  After a :class:`ProtocolError` the stream is
    unusable (there is no way to find the next frame boundary) and the
    connection must be dropped.

    A ``lenient`` decoder (the worker's) still knows the frame boundaries of a
    frame it cannot use, so it yields :class:`Rejected` for it instead: an
    oversized frame is skipped as it streams past, never buffered.  Only a
    wrong protocol version stays fatal.
    """

    __slots__ = ("_buf", "_broken", "_lenient", "_skip")

    def __init__(self, lenient: bool = False) -> None:
        #: Received bytes not decoded yet: a bytearray, or the bytes object of
        #: the last read while nothing else is pending (or, inside :meth:`receive`
        #: only, the caller's memoryview).
        self._buf: bytes | bytearray | memoryview = bytearray()
        self._broken = False
        self._lenient = lenient
        self._skip = 0

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        if self._skip:  # the rest of an oversized frame, streaming past
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
            if not data:
                return
        buf = self._buf
        if not buf and data.__class__ is bytes:
            # Nothing pending: decode straight out of the received bytes, no
            # copy (events() copies only a trailing partial frame).
            self._buf = data
        elif buf.__class__ is bytes:
            self._buf = bytearray(buf) + data
        else:
            buf += data  # type: ignore[operator]  # (a bytearray: a view never outlives receive())

    def events(self) -> Generator[Event, None, None]:
        """Every complete event (a ProtocolError after the good ones before it)."""
        out: list[Event] = []
        try:
            self.decode_into(out)
        except ProtocolError:
            yield from out
            raise
        yield from out

    def decode_into(self, out: list[Event]) -> None:
        """Append every complete event to ``out``; on a fault, raise ProtocolError
        with the events before it appended.  (No generator: the transports call
        this once per read.)"""
        self.receive(b"", out)

    def decode_one(self, data: bytes | memoryview, kind: int) -> Event | None:
        """The event of ``data`` when it is exactly one complete, well-formed frame of
        ``kind`` and nothing is pending: a worker's usual read (one REQUEST), decoded
        with nothing to append to and nothing to keep.  None otherwise, with nothing
        consumed: then :meth:`receive` it, which also makes a malformed frame its
        :class:`Rejected` (and a wrong version the fatal ProtocolError).  ``kind``: a
        msgpack-array kind (not BODY)."""
        size = len(data)
        if size <= HEADER_SIZE or self._buf or self._skip or self._broken:
            return None
        version, frame_kind, length = HEADER.unpack_from(data)
        if frame_kind != kind or version != VERSION or HEADER_SIZE + length != size:
            return None
        cls, build = FRAMES[kind]
        try:  # (_decode's work without its error messages: a fault goes the general way)
            fields = _unpackb(data[HEADER_SIZE:], raw=False, use_list=False)
        except Exception:
            return None
        if type(fields) is not tuple or len(fields) != len(cls._fields):  # type: ignore[attr-defined]
            return None
        event: Event | None = build(fields)  # type: ignore[misc]  # (a msgpack-array kind)
        return event

    def receive(self, data: bytes | memoryview, out: list[Event]) -> None:
        """:meth:`feed` then :meth:`decode_into`, in one call: a read's whole cost.

        ``data`` may be a memoryview of the caller's receive buffer (the worker's
        transport): with nothing pending, the frames are decoded straight out of
        it and only a trailing partial frame is copied, so the caller may reuse
        its buffer as soon as this returns."""
        if self._broken:
            raise ProtocolError("stream already failed")
        if data:
            cls = data.__class__
            if not self._buf and (cls is bytes or cls is memoryview) and not self._skip:
                self._buf = data  # (feed()'s common case, inline)
            else:
                self.feed(data)  # type: ignore[arg-type]
        buf = self._buf
        offset = 0
        size = len(buf)
        append = out.append
        try:
            while size - offset >= HEADER_SIZE:
                version, kind, length = HEADER.unpack_from(buf, offset)
                if version != VERSION:
                    raise ProtocolError(f"unsupported protocol version {version} (this side speaks {VERSION})")
                start = offset + HEADER_SIZE
                if length > MAX_PAYLOAD:
                    reason = f"frame of {length} bytes exceeds the {MAX_PAYLOAD}-byte limit"
                    if not self._lenient:
                        raise ProtocolError(reason)
                    if size - start < _PEEK:
                        break  # wait for the request id
                    rid = _peek_rid(kind, buf, start, start + _PEEK)
                    if size - start >= length:  # (only if fed in one huge piece)
                        offset = start + length
                        append(Rejected(kind, rid, reason, True))
                        continue
                    self._skip = length - (size - start)
                    offset = size
                    append(Rejected(kind, rid, reason, True))
                    break
                end = start + length
                if end > size:
                    break
                offset = end
                try:
                    append(_decode(kind, buf, start, end))
                except ProtocolError as exc:
                    if not self._lenient:
                        raise
                    append(Rejected(kind, _peek_rid(kind, buf, start, end), str(exc), False))
        except ProtocolError:
            self._broken = True
            raise
        finally:
            if buf.__class__ is memoryview:  # the caller's buffer: keep nothing of it but a copy of the rest
                self._buf = b"" if offset >= size else bytearray(buf[offset:])
            elif offset:
                if buf.__class__ is not bytes:
                    del buf[:offset]  # type: ignore[union-attr]  # (a bytearray here)
                elif offset == size:
                    self._buf = b""  # all of it decoded (the usual read): nothing to copy or allocate
                else:
                    self._buf = bytearray(memoryview(buf)[offset:])


#: Payload bytes enough to read a request id (array header + uint32).
_PEEK = 16


def _peek_rid(kind: int, buf: bytes | bytearray | memoryview, start: int, end: int) -> int | None:
    """The request id at the start of a REQUEST-like payload, if it reads as one."""
    if kind not in _REQUEST_LIKE:
        return None
    unpacker = msgpack.Unpacker()
    unpacker.feed(bytes(buf[start : min(end, start + _PEEK)]))
    try:
        unpacker.read_array_header()
        rid = unpacker.unpack()
    except Exception:
        return None
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else None


def _name(kind: int) -> str:
    try:
        return Kind(kind).name
    except ValueError:
        return f"kind {kind}"


_unpackb = msgpack.unpackb


def _decode(kind: int, buf: bytes | bytearray | memoryview, start: int, end: int) -> Event:
    if kind == _BODY:
        if end - start < RID.size:
            raise ProtocolError("BODY frame shorter than its request id")
        # One copy: ``bytes(buf[a:b])`` copied twice (the bytearray slice, then bytes).
        # The view is released before the caller trims ``buf``.
        with memoryview(buf) as view:
            data = view[start + RID.size : end].tobytes()
        return new_event(Body, (RID.unpack_from(buf, start)[0], data))
    spec = FRAMES.get(kind)
    if spec is None:
        raise ProtocolError(f"unknown frame kind {kind}")
    cls: Any
    cls, build = spec
    try:
        # Arrays as tuples: cheaper to build, and headers come out as the
        # (name, value) tuples ASGI servers and middlewares expect.
        fields: Any = _unpackb(buf[start:end], raw=False, use_list=False)
    except Exception as exc:
        raise ProtocolError(f"{_name(kind)} payload is not valid msgpack: {exc}") from None
    if type(fields) is not tuple or len(fields) != len(cls._fields):
        raise ProtocolError(f"{_name(kind)} payload must be an array of {len(cls._fields)} fields")
    event = build(fields)  # type: ignore[misc]  # (None only for BODY, handled above)
    if event is None:
        raise ProtocolError(f"malformed {cls.__name__} frame: {fields!r:.200}")
    return event
