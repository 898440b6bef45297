"""The front's half of the direct stream: a worker writes a streamed body to the client.

Relaying a streamed body costs the front a wake-up, two copies and an ASGI
``send()`` per chunk; one front relaying a 1 GiB download was saturated at
4-5x gunicorn sync's time.  So where the front owns a plain connection —
uvicorn's httptools protocol, whose ASGI ``send`` is a bound method of its
request cycle (as :mod:`.client` uses it) — a worker whose response streams
OFFERs to write the rest itself.  The relay answers when it reaches the OFFER,
that is once everything before it went to uvicorn: TAKE, with the client
socket's descriptor, if uvicorn's buffer is empty (else the bytes would cross),
or KEEP.  The head is uvicorn's own (``send()`` wrote it, so keep-alive, chunked
framing and the access log stay its decisions); after a TAKE the worker frames
the body as that head said and reports with DIRECT what it wrote, which the
front tells uvicorn's cycle before it completes the response as ``send()`` would.
The worker's half, and how a slow reader still never holds a worker:
:mod:`a2wsgi_mp.workers.direct`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..ipc import protocol
from .exchange import Exchange

__all__ = ["answer", "may_offer", "resume"]

_Cycle: Any = None
try:  # uvicorn's httptools protocol: the one whose cycle we know
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as _Cycle
except ImportError:  # pragma: no cover (no httptools: never offered)
    pass


def _cycle(send: Callable[..., Any]) -> Any:
    cycle = getattr(send, "__self__", None)
    return cycle if _Cycle is not None and type(cycle) is _Cycle else None


def _plain(transport: Any) -> bool:
    """A connection a worker may write to: not TLS (the bytes would need the front's session)."""
    return transport.get_extra_info("sslcontext") is None


def may_offer(send: Callable[..., Any]) -> bool:
    """Could the response going to ``send`` take a worker's OFFER (said in the request's head)?"""
    cycle = _cycle(send)
    return cycle is not None and _plain(cycle.transport)


def answer(exchange: Exchange, send: Callable[..., Any]) -> bool:
    """Answer the worker's OFFER: TAKE (True) when everything sent so far has left
    uvicorn's buffer for the socket, else KEEP."""
    cycle = _cycle(send)
    fd: int | None = None
    chunked = False
    if cycle is not None and not exchange.cancelled and _quiet(cycle):
        sock = cycle.transport.get_extra_info("socket")
        if sock is not None:
            fd, chunked = sock.fileno(), bool(cycle.chunked_encoding)
    return exchange.slot.pipe.answer_offer(exchange.rid, fd, chunked)


def _quiet(cycle: Any) -> bool:
    transport = cycle.transport
    return (cycle.response_started and not cycle.response_complete and not cycle.disconnected
            and cycle.chunked_encoding is not None and cycle.scope["method"] != "HEAD"
            and not cycle.flow.write_paused and not transport.is_closing()
            and transport.get_write_buffer_size() == 0 and _plain(transport))


async def resume(send: Callable[..., Any], event: protocol.Direct) -> bool:
    """The worker's DIRECT: tell uvicorn's cycle what went out; True when that completed
    the response (the last chunk written by ``send()``, as for any response)."""
    cycle = _cycle(send)
    assert cycle is not None  # (a TAKE went only to such a cycle)
    if not cycle.chunked_encoding:
        cycle.expected_content_length -= event.written
    if event.tail and not cycle.disconnected and not cycle.transport.is_closing():
        cycle.transport.write(event.tail)
    if event.done:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True
    return False
