"""The events of the IPC protocol: what :class:`~a2wsgi_mp.ipc.protocol.Decoder`
yields and the ``encode_*`` functions take apart.  Plain named tuples, so an
event is as cheap to build as the msgpack array it comes from."""

from __future__ import annotations

from typing import NamedTuple, Union

__all__ = ['Request', 'Cancel', 'Ready', 'BootError', 'Start', 'File', 'FileAck', 'ShmSetup', 'RequestShm', 'ShmCredit', 'ShmBody', 'Body', 'End', 'Abort', 'Log', 'Spawn', 'Spawned', 'Exited', 'Report', 'Usage', 'AppError', 'Rejected', 'Event']


class Request(NamedTuple):
    """A request to run: ``head`` is the msgpack-clean scope subset
    (:func:`a2wsgi_mp.environ.request_head`).  The body is ``body`` inline, or,
    when ``body`` is None and ``body_length`` > 0, in a file descriptor that came
    with this frame."""

    rid: int
    head: dict
    body: bytes | None
    body_length: int


class Cancel(NamedTuple):
    """The client went away: stop iterating and close the app's iterable."""

    rid: int


class Ready(NamedTuple):
    """The worker has loaded the app and serves on this connection."""

    pid: int
    version: int


class BootError(NamedTuple):
    """The worker could not load the app; ``message`` says why (a traceback)."""

    message: str


class Start(NamedTuple):
    """Status, headers and the first chunk; ``done`` when nothing follows."""

    rid: int
    status: int
    headers: list
    body: bytes
    done: bool


class File(NamedTuple):
    """The whole response: status, headers, and ``length`` bytes of a file from
    ``offset``.  The file's descriptor follows by SCM_RIGHTS once the front
    answers with FILE_ACK (a descriptor must not reach a reader that would drop it)."""

    rid: int
    status: int
    headers: list
    offset: int
    length: int


class FileAck(NamedTuple):
    """The front has stopped reading and waits for the FILE frame's descriptor."""

    rid: int


class ShmSetup(NamedTuple):
    """The slot's shared-memory ring: ``size`` bytes, its memfd came with the frame."""

    size: int


class RequestShm(NamedTuple):
    """A REQUEST whose ``length``-byte body is at the start of the slot's ring
    (the ring is idle between requests).  The worker copies it out on receipt."""

    rid: int
    head: dict
    length: int


class ShmCredit(NamedTuple):
    """``nbytes`` more of the ring (in order) may be written again."""

    nbytes: int


class ShmBody(NamedTuple):
    """A response chunk at ``offset`` in the slot's ring (never wrapping)."""

    rid: int
    offset: int
    length: int


class Body(NamedTuple):
    rid: int
    data: bytes


class End(NamedTuple):
    rid: int


class Abort(NamedTuple):
    """The response started but cannot complete: the client must see it cut."""

    rid: int
    reason: str


class Log(NamedTuple):
    """A message for the front's logging (``wsgi.errors``, app tracebacks)."""

    level: int
    message: str


class AppError(NamedTuple):
    """The app raised while serving request ``rid``; ``message`` is the log
    line with its traceback.  Sent before the request's 500 (START) or ABORT,
    so the front has it when the response ends (``raise_app_errors``)."""

    rid: int
    message: str


class Spawn(NamedTuple):
    """Start worker ``worker_id``; its ``slots`` connection sockets come with the frame."""

    worker_id: int
    slots: int


class Spawned(NamedTuple):
    worker_id: int
    pid: int


class Exited(NamedTuple):
    """A worker process ended; ``status`` is a raw ``waitpid`` status."""

    pid: int
    status: int


class Report(NamedTuple):
    """Front -> worker, once after READY: report ``rss`` (a bool) with every response.

    Off unless the pool has ``max_rss``: reading it costs the worker ~2 us a request."""

    rss: bool


class Usage(NamedTuple):
    """Worker -> front: its resident memory in bytes, in the same write as (and just
    before) a response's last frame, so the front decides on recycling before it
    hands the slot to the next request."""

    rss: int


class Rejected(NamedTuple):
    """A frame a lenient :class:`Decoder` skipped: too large (``oversized``) or
    malformed.  ``rid`` is the request id when the payload's start shows one,
    so the receiver can fail that request alone and go on."""

    kind: int
    rid: int | None
    reason: str
    oversized: bool


Event = Union[
    Request, Cancel, Ready, BootError, Start, Body, End, Abort, Log, Spawn, Spawned, Exited, File, FileAck,
    ShmSetup, ShmCredit, ShmBody, RequestShm, Report, Usage, AppError, Rejected,
]
