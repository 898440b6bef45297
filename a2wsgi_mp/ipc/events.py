"""The frame kinds of the IPC protocol and the events they decode to.

Each event class is registered with its :class:`Kind` and a ``build`` function
that checks the decoded msgpack fields and makes the event (None: malformed),
so a frame kind is defined in one place: here.  The decoder
(:mod:`~a2wsgi_mp.ipc.decoder`) reads this table; the encoders live in
:mod:`~a2wsgi_mp.ipc.protocol` (:func:`~a2wsgi_mp.ipc.protocol.encode` packs any
event of this table).  Events are plain named tuples, so one is as cheap to
build as the msgpack array it comes from.  ``docs/protocol.md`` says how to add
a kind.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Callable, NamedTuple, TypeVar, Union

from ..environ import HEAD_FIELDS
from .frames import VERSION

__all__ = [
    "Kind", "FRAMES", "Request", "Cancel", "Ready", "BootError", "Start", "File", "FileAck", "ShmSetup",
    "RequestShm", "ShmCredit", "ShmBody", "Body", "End", "Abort", "Log", "Spawn", "Spawned", "Exited", "Report",
    "Usage", "AppError", "Offer", "Take", "Keep", "Direct", "Rejected", "Event",
]


class Kind(IntEnum):
    """The kind byte of a frame's header.

    Kinds below :data:`TO_FRONT` go from the front to a worker (or the zygote);
    kinds from it up come back.  The numbers are the wire format: never reuse one.
    """

    REQUEST = 1
    CANCEL = 2
    SPAWN = 3
    FILE_ACK = 4
    SHM_SETUP = 5
    SHM_CREDIT = 6
    REQUEST_SHM = 7
    REPORT = 8
    TAKE = 9
    KEEP = 10
    READY = 16
    BOOT_ERROR = 17
    START = 18
    BODY = 19
    END = 20
    ABORT = 21
    LOG = 22
    SPAWNED = 23
    EXITED = 24
    FILE = 25
    SHM_BODY = 26
    USAGE = 27
    APP_ERROR = 28
    OFFER = 29
    DIRECT = 30


#: The first kind a worker (or the zygote) sends to the front.
TO_FRONT = 16

#: kind -> (event class, build).  ``build(fields)`` gets the payload's msgpack
#: array as a tuple of the class's length and returns the event, or None when a
#: field has the wrong type.  BODY is here too (build None): its payload is
#: raw bytes, decoded by the decoder itself.
FRAMES: dict[int, tuple[type, Callable[[tuple], Any] | None]] = {}

_T = TypeVar("_T", bound=type)

#: ``tuple.__new__(cls, fields)`` builds a named tuple from a tuple of the
#: right length in C: a named tuple's own ``__new__`` is Python code (~1.5k
#: instructions a call), paid for every decoded frame.
new_event: Callable[..., Any] = tuple.__new__


def frame(kind: Kind, valid: Callable[..., bool] | None = None,
          build: Callable[[tuple], Any] | None = None) -> Callable[[_T], _T]:
    """Register an event class as the decoding of ``kind`` frames.

    ``valid(*fields)`` checks the field types (the event is then ``cls(*fields)``);
    ``build(fields)`` instead does both, for an event whose fields need converting.
    """

    def register(cls: _T) -> _T:
        if kind in FRAMES:
            raise ValueError(f"frame kind {kind!r} registered twice")
        maker = build
        if maker is None and valid is not None:
            def maker(fields: tuple, _cls: Any = cls, _valid: Callable[..., bool] = valid) -> Any:
                return new_event(_cls, fields) if _valid(*fields) else None
        FRAMES[kind] = (cls, maker)
        cls.KIND = kind  # type: ignore[attr-defined]
        return cls

    return register


def _rid_only(rid: Any) -> bool:
    return isinstance(rid, int)


def _naturals(*values: Any) -> bool:
    for value in values:
        if not isinstance(value, int) or value < 0:
            return False
    return True


def _ints(*values: Any) -> bool:
    for value in values:
        if not isinstance(value, int):
            return False
    return True


def _headers(headers: Any) -> list | None:
    """``headers`` as a list of (bytes, bytes) tuples, or None.

    ``use_list=False`` decodes them as a tuple of tuples; a list, because an
    ASGI middleware may append to it (Starlette's ``MutableHeaders`` does)."""
    if type(headers) is not tuple:
        return None
    for h in headers:
        if type(h) is not tuple or len(h) != 2 or type(h[0]) is not bytes or type(h[1]) is not bytes:
            return None
    return list(headers)


# ---------------------------------------------------------------- front -> worker


#: A REQUEST's head is the array of environ.HEAD_FIELDS.
_HEAD_LEN = len(HEAD_FIELDS)


def _request(fields: tuple) -> "Request | None":
    # The worker's hot path: one call, not a check and a constructor.
    rid, head, body, body_length = fields
    if (isinstance(rid, int) and type(head) is tuple and len(head) == _HEAD_LEN
            and (body is None or isinstance(body, bytes)) and isinstance(body_length, int) and body_length >= 0):
        return new_event(Request, fields)
    return None


@frame(Kind.REQUEST, build=_request)
class Request(NamedTuple):
    """A request to run: ``head`` is the msgpack-clean scope subset
    (:func:`a2wsgi_mp.environ.request_head`) as the array of
    :data:`~a2wsgi_mp.environ.HEAD_FIELDS` (:func:`~a2wsgi_mp.environ.head_fields`).  The body is ``body`` inline, or,
    when ``body`` is None and ``body_length`` > 0, in a file descriptor that came
    with this frame."""

    rid: int
    head: tuple
    body: bytes | None
    body_length: int


@frame(Kind.CANCEL, _rid_only)
class Cancel(NamedTuple):
    """The client went away: stop iterating and close the app's iterable."""

    rid: int


@frame(Kind.FILE_ACK, _rid_only)
class FileAck(NamedTuple):
    """The front has stopped reading and waits for the FILE frame's descriptor."""

    rid: int


@frame(Kind.SHM_SETUP, _naturals)
class ShmSetup(NamedTuple):
    """The slot's shared-memory ring: ``size`` bytes, its memfd came with the frame."""

    size: int


@frame(Kind.SHM_CREDIT, _naturals)
class ShmCredit(NamedTuple):
    """``nbytes`` more of the ring (in order) may be written again."""

    nbytes: int


@frame(Kind.REQUEST_SHM, lambda rid, head, length: (
    isinstance(rid, int) and type(head) is tuple and len(head) == _HEAD_LEN and isinstance(length, int)
    and length >= 0))
class RequestShm(NamedTuple):
    """A REQUEST whose ``length``-byte body is at the start of the slot's ring
    (the ring is idle between requests).  The worker copies it out on receipt."""

    rid: int
    head: tuple
    length: int


@frame(Kind.REPORT, lambda rss: isinstance(rss, bool))
class Report(NamedTuple):
    """Front -> worker, once after READY: report ``rss`` (a bool) with every response.

    Off unless the pool has ``max_rss``: reading it costs the worker ~2 us a request."""

    rss: bool


@frame(Kind.SPAWN, _ints)
class Spawn(NamedTuple):
    """Front -> zygote: start worker ``worker_id``; its ``slots`` connection sockets come with the frame."""

    worker_id: int
    slots: int


# ---------------------------------------------------------------- worker -> front


@frame(Kind.READY, build=lambda fields: new_event(Ready, fields) if isinstance(fields[0], int)
       and fields[1] == VERSION else None)
class Ready(NamedTuple):
    """The worker has loaded the app and serves on this connection."""

    pid: int
    version: int


@frame(Kind.BOOT_ERROR, lambda message: isinstance(message, str))
class BootError(NamedTuple):
    """The worker could not load the app; ``message`` says why (a traceback)."""

    message: str


def _start(fields: tuple) -> "Start | None":
    # The hot path (every response's head): one tight check, _headers() inline.
    rid, status, headers, body, done = fields
    if type(rid) is not int or type(status) is not int or type(body) is not bytes or type(done) is not bool \
            or type(headers) is not tuple:
        return None
    for h in headers:
        if type(h) is not tuple or len(h) != 2 or type(h[0]) is not bytes or type(h[1]) is not bytes:
            return None
    return new_event(Start, (rid, status, list(headers), body, done))


@frame(Kind.START, build=_start)
class Start(NamedTuple):
    """Status, headers and the first chunk; ``done`` when nothing follows."""

    rid: int
    status: int
    headers: list
    body: bytes
    done: bool


@frame(Kind.BODY)
class Body(NamedTuple):
    """One more chunk.  On the wire: a 4-byte request id, then the raw bytes."""

    rid: int
    data: bytes


@frame(Kind.END, _rid_only)
class End(NamedTuple):
    rid: int


@frame(Kind.ABORT, lambda rid, reason: isinstance(rid, int) and isinstance(reason, str))
class Abort(NamedTuple):
    """The response started but cannot complete: the client must see it cut."""

    rid: int
    reason: str


@frame(Kind.LOG, lambda level, message: isinstance(level, int) and isinstance(message, str))
class Log(NamedTuple):
    """A message for the front's logging (``wsgi.errors``, app tracebacks)."""

    level: int
    message: str


def _file(fields: tuple) -> "File | None":
    rid, status, headers, offset, length = fields
    headers = _headers(headers)
    if headers is not None and _ints(rid, status) and _naturals(offset, length):
        return new_event(File, (rid, status, headers, offset, length))
    return None


@frame(Kind.FILE, build=_file)
class File(NamedTuple):
    """The whole response: status, headers, and ``length`` bytes of a file from
    ``offset``.  The file's descriptor follows by SCM_RIGHTS once the front
    answers with FILE_ACK (a descriptor must not reach a reader that would drop it)."""

    rid: int
    status: int
    headers: list
    offset: int
    length: int


@frame(Kind.SHM_BODY, _naturals)
class ShmBody(NamedTuple):
    """A response chunk at ``offset`` in the slot's ring (never wrapping)."""

    rid: int
    offset: int
    length: int


@frame(Kind.USAGE, _naturals)
class Usage(NamedTuple):
    """Worker -> front: its resident memory in bytes, in the same write as (and just
    before) a response's last frame, so the front decides on recycling before it
    hands the slot to the next request."""

    rss: int


@frame(Kind.APP_ERROR, lambda rid, message: isinstance(rid, int) and isinstance(message, str))
class AppError(NamedTuple):
    """The app raised while serving request ``rid``; ``message`` is the log
    line with its traceback.  Sent before the request's 500 (START) or ABORT,
    so the front has it when the response ends (``raise_app_errors``)."""

    rid: int
    message: str


# ---------------------------------------------------------------- direct stream
#
# A streamed response's body may go from the worker straight to the client's
# socket (``docs/protocol.md``, "Direct stream"): the worker OFFERs after its
# START and waits; the front answers TAKE (with the client socket's descriptor)
# or KEEP (relay as usual); after a TAKE the worker writes the body itself and
# says what it wrote with DIRECT, handing the rest back when the client stops
# reading.


@frame(Kind.OFFER, _rid_only)
class Offer(NamedTuple):
    """Worker -> front, right after a START that is not ``done``: "I can write this
    body to the client myself".  The worker sends nothing more until TAKE or KEEP."""

    rid: int


@frame(Kind.TAKE, lambda rid, chunked: isinstance(rid, int) and isinstance(chunked, bool))
class Take(NamedTuple):
    """Front -> worker: write the rest of the body to the client socket that came
    with this frame (SCM_RIGHTS), as HTTP/1.1 chunks when ``chunked``.  Everything
    the front had of this response is written already (its buffer is empty)."""

    rid: int
    chunked: bool


@frame(Kind.KEEP, _rid_only)
class Keep(NamedTuple):
    """Front -> worker: no; send the body as BODY frames."""

    rid: int


def _direct(fields: tuple) -> "Direct | None":
    rid, written, tail, done = fields
    if type(rid) is int and type(written) is int and written >= 0 and type(tail) is bytes and type(done) is bool:
        return new_event(Direct, fields)
    return None


@frame(Kind.DIRECT, build=_direct)
class Direct(NamedTuple):
    """Worker -> front, after a TAKE: ``written`` bytes of body went to the client
    (counted whole, though ``tail`` of their framed bytes did not: the front writes
    ``tail`` first, as it is).  ``done``: the response is complete (its last frame;
    the front writes a chunked body's last chunk); otherwise the rest comes as
    BODY frames — the client stopped reading and the worker may not wait for it."""

    rid: int
    written: int
    tail: bytes
    done: bool


# ---------------------------------------------------------------- zygote -> front


@frame(Kind.SPAWNED, _ints)
class Spawned(NamedTuple):
    worker_id: int
    pid: int


@frame(Kind.EXITED, _ints)
class Exited(NamedTuple):
    """A worker process ended; ``status`` is a raw ``waitpid`` status."""

    pid: int
    status: int


# ---------------------------------------------------------------- not frames


class Rejected(NamedTuple):
    """A frame a lenient decoder skipped: too large (``oversized``) or
    malformed.  ``rid`` is the request id when the payload's start shows one,
    so the receiver can fail that request alone and go on."""

    kind: int
    rid: int | None
    reason: str
    oversized: bool


Event = Union[
    Request, Cancel, Ready, BootError, Start, Body, End, Abort, Log, Spawn, Spawned, Exited, File, FileAck,
    ShmSetup, ShmCredit, ShmBody, RequestShm, Report, Usage, AppError, Offer, Take, Keep, Direct, Rejected,
]

_missing = set(Kind) - set(FRAMES)
assert not _missing, f"frame kinds without an event class: {_missing}"
