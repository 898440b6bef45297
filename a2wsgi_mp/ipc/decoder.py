"""Decoding the IPC protocol: bytes in, events out (sans-IO).

A :class:`Decoder` takes bytes in pieces of any size and yields the events of
the complete frames, checking every field's type so a malformed frame is a
:class:`~a2wsgi_mp.ipc.frames.ProtocolError` here, never a crash later.
Import it from :mod:`a2wsgi_mp.ipc.protocol`, the protocol's entry point.
"""

from __future__ import annotations

from typing import Any, Iterator

import msgpack

from .events import (
    Event,
    Request,
    Cancel,
    Ready,
    BootError,
    Start,
    File,
    FileAck,
    ShmSetup,
    RequestShm,
    ShmCredit,
    ShmBody,
    Body,
    End,
    Abort,
    Log,
    AppError,
    Spawn,
    Spawned,
    Exited,
    Report,
    Usage,
    Rejected,
)
from .frames import (
    _KIND_NAMES,
    ABORT,
    APP_ERROR,
    BOOT_ERROR,
    BODY,
    CANCEL,
    END,
    EXITED,
    FILE,
    FILE_ACK,
    HEADER,
    HEADER_SIZE,
    LOG,
    MAX_PAYLOAD,
    READY,
    REPORT,
    REQUEST,
    REQUEST_SHM,
    RID,
    SHM_BODY,
    SHM_CREDIT,
    SHM_SETUP,
    SPAWN,
    SPAWNED,
    START,
    USAGE,
    VERSION,
    ProtocolError,
)

_CONTROL: dict[int, type] = {
    REQUEST: Request,
    CANCEL: Cancel,
    READY: Ready,
    BOOT_ERROR: BootError,
    START: Start,
    END: End,
    ABORT: Abort,
    LOG: Log,
    SPAWN: Spawn,
    SPAWNED: Spawned,
    EXITED: Exited,
    FILE: File,
    FILE_ACK: FileAck,
    SHM_SETUP: ShmSetup,
    SHM_CREDIT: ShmCredit,
    SHM_BODY: ShmBody,
    REQUEST_SHM: RequestShm,
    REPORT: Report,
    USAGE: Usage,
    APP_ERROR: AppError,
}


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
        #: the last read while nothing else is pending.
        self._buf: bytes | bytearray = bytearray()
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
            buf += data

    def events(self) -> Iterator[Event]:
        if self._broken:
            raise ProtocolError("stream already failed")
        buf = self._buf
        offset = 0
        size = len(buf)
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
                        yield Rejected(kind, rid, reason, True)
                        continue
                    self._skip = length - (size - start)
                    offset = size
                    yield Rejected(kind, rid, reason, True)
                    break
                end = start + length
                if end > size:
                    break
                offset = end
                try:
                    event = _decode(kind, buf, start, end)
                except ProtocolError as exc:
                    if not self._lenient:
                        raise
                    event = Rejected(kind, _peek_rid(kind, buf, start, end), str(exc), False)
                yield event
        except ProtocolError:
            self._broken = True
            raise
        finally:
            if offset:
                if buf.__class__ is bytes:
                    rest = bytearray(memoryview(buf)[offset:])
                    if self._buf is not buf:  # fed again meanwhile: keep what came since
                        rest += memoryview(self._buf)[len(buf):]
                    self._buf = rest
                else:
                    del buf[:offset]


#: Payload bytes enough to read a request id (array header + uint32).
_PEEK = 16


def _peek_rid(kind: int, buf: bytearray, start: int, end: int) -> int | None:
    """The request id at the start of a REQUEST-like payload, if it reads as one."""
    if kind not in (REQUEST, REQUEST_SHM):
        return None
    unpacker = msgpack.Unpacker()
    unpacker.feed(bytes(buf[start : min(end, start + _PEEK)]))
    try:
        unpacker.read_array_header()
        rid = unpacker.unpack()
    except Exception:
        return None
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else None


def _decode(kind: int, buf: bytearray, start: int, end: int) -> Event:
    if kind == BODY:
        if end - start < RID.size:
            raise ProtocolError("BODY frame shorter than its request id")
        # One copy: ``bytes(buf[a:b])`` copied twice (the bytearray slice, then bytes).
        # The view is released before the caller trims ``buf``.
        with memoryview(buf) as view:
            data = view[start + RID.size : end].tobytes()
        return Body(RID.unpack_from(buf, start)[0], data)
    cls = _CONTROL.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown frame kind {kind}")
    try:
        # Arrays as tuples: cheaper to build, and headers come out as the
        # (name, value) tuples ASGI servers and middlewares expect.
        fields: Any = msgpack.unpackb(buf[start:end], raw=False, use_list=False)
    except Exception as exc:
        raise ProtocolError(f"{_KIND_NAMES[kind]} payload is not valid msgpack: {exc}") from None
    if type(fields) is not tuple or len(fields) != len(cls._fields):
        raise ProtocolError(f"{_KIND_NAMES[kind]} payload must be an array of {len(cls._fields)} fields")
    if cls is Start:  # the hot path (every response's head): checked here, not by _check's chain
        rid, status, headers, body, done = fields
        if (type(rid) is int and type(status) is int and type(body) is bytes and type(done) is bool
                and _headers_ok(headers)):
            # A list (of tuples), so an ASGI middleware may append to it.
            return Start(rid, status, list(headers), body, done)
        raise ProtocolError(f"malformed Start frame: {fields!r:.200}")
    if cls is File:
        headers = fields[2]
        if not _headers_ok(headers):
            raise ProtocolError(f"malformed {cls.__name__} frame: headers {headers!r:.200}")
        # A list (of tuples), so an ASGI middleware may append to it.
        event = cls(fields[0], fields[1], list(headers), fields[3], fields[4])
    else:
        event = cls(*fields)
    _check(event)
    return event


def _check(event: Event) -> None:
    """Field types, so a malformed frame is a ProtocolError here, not a crash later.
    (A START frame is checked where :func:`_decode` builds it.)"""
    ok: bool
    if isinstance(event, Request):
        ok = (
            isinstance(event.rid, int)
            and isinstance(event.head, dict)
            and (event.body is None or isinstance(event.body, bytes))
            and isinstance(event.body_length, int)
            and event.body_length >= 0
        )
    elif isinstance(event, File):
        ok = (
            isinstance(event.rid, int)
            and isinstance(event.status, int)
            and isinstance(event.offset, int)
            and isinstance(event.length, int)
            and event.offset >= 0
            and event.length >= 0
        )
    elif isinstance(event, (Cancel, End, FileAck)):
        ok = isinstance(event.rid, int)
    elif isinstance(event, (Abort, AppError)):
        ok = isinstance(event.rid, int) and isinstance(event[1], str)
    elif isinstance(event, Ready):
        ok = isinstance(event.pid, int) and event.version == VERSION
    elif isinstance(event, BootError):
        ok = isinstance(event.message, str)
    elif isinstance(event, RequestShm):
        ok = isinstance(event.rid, int) and isinstance(event.head, dict) and isinstance(event.length, int) \
            and event.length >= 0
    elif isinstance(event, (ShmSetup, ShmCredit, ShmBody)):
        ok = all(isinstance(value, int) and value >= 0 for value in event)
    elif isinstance(event, Report):
        ok = isinstance(event.rss, bool)
    elif isinstance(event, Usage):
        ok = isinstance(event.rss, int) and event.rss >= 0
    elif isinstance(event, (Spawn, Spawned, Exited)):
        ok = all(isinstance(value, int) for value in event)
    else:  # Log
        ok = isinstance(event.level, int) and isinstance(event.message, str)
    if not ok:
        raise ProtocolError(f"malformed {type(event).__name__} frame: {event!r:.200}")


def _headers_ok(headers: Any) -> bool:
    """A tuple of (bytes, bytes) tuples, as ``use_list=False`` decodes them."""
    if type(headers) is not tuple:
        return False
    for h in headers:
        if type(h) is not tuple or len(h) != 2 or type(h[0]) is not bytes or type(h[1]) is not bytes:
            return False
    return True
