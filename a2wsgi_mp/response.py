"""Run one WSGI call with PEP 3333 semantics, feeding the result to a sink.

This is the half of a WSGI server that does not care where bytes go.  The pool
worker feeds an IPC connection; the in-process :class:`~a2wsgi_mp.wsgi.WSGIMiddleware`
feeds an asyncio queue.  Both get the same rules:

* headers leave only with the first non-empty chunk, so ``start_response(...,
  exc_info)`` can still replace them;
* the ``write()`` callable works;
* a declared Content-Length is never exceeded, and falling short of it cuts the
  response rather than pretending it is complete;
* the iterable's ``close()`` is always called;
* an error before the response started becomes a 500; after, the response is cut.
"""

from __future__ import annotations

import re
import traceback
from typing import Any, Callable, Iterable, Protocol

Headers = list[tuple[bytes, bytes]]

INTERNAL_ERROR_BODY = b"Internal Server Error"
INTERNAL_ERROR_HEADERS: Headers = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(INTERNAL_ERROR_BODY)).encode()),
]

_FORBIDDEN = ("\r", "\n", "\0")
#: The same characters as one regex: two C calls a header instead of a generator.
_CONTROL = re.compile("[\r\n\0]")


class SinkGone(Exception):
    """Raised by a sink whose far end vanished; it ends the call, unlike app errors."""


class ResponseSink(Protocol):
    """Where a response goes.  Calls arrive in the order start, body*, end|abort."""

    def start(self, status: int, headers: Headers, body: bytes, done: bool) -> None:
        """Status, headers and the first non-empty chunk; ``done`` if it is the last."""

    def body(self, chunk: bytes) -> None:
        """One more non-empty chunk."""

    def end(self) -> None:
        """The response is complete."""

    def abort(self, reason: str) -> None:
        """The response started but cannot be completed: the client must see it cut."""

    def cancelled(self) -> bool:
        """True once the client has gone; the app's iterable is then closed."""


class StartResponse:
    """The ``start_response`` callable of one request, and its ``write()``."""

    __slots__ = ("sink", "status", "headers", "started", "done", "remaining", "head")

    def __init__(self, sink: ResponseSink, head: bool = False) -> None:
        self.sink = sink
        #: A HEAD request: its Content-Length describes a body that is not sent.
        self.head = head
        self.status: int | None = None
        self.headers: Headers = []
        self.started = False
        self.done = False
        self.remaining: int | None = None

    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Any = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.started:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        if not isinstance(status, str) or not status[:3].isdigit() or status[3:4] not in ("", " "):
            raise ValueError(f"invalid WSGI status line {status!r}")
        code = int(status[:3])
        encoded: Headers = []
        remaining = None
        for name, value in headers:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"header {name!r}: names and values must be str")
            if _CONTROL.search(name) or _CONTROL.search(value):
                raise ValueError(f"header {name!r} contains a control character")
            lname = name.lower()
            # Raises UnicodeEncodeError for non-latin-1 text: a 500, as PEP 3333 wants.
            encoded.append((lname.encode("latin-1"), value.encode("latin-1")))
            if lname == "content-length":
                remaining = int(value)
        self.status, self.headers, self.remaining = code, encoded, remaining
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's imperative ``write()``: data goes out before it returns."""
        self.send(data, last=False)

    def send(self, chunk: bytes, last: bool) -> None:
        if self.done:
            return
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"WSGI body chunks must be bytes, not {type(chunk).__name__}")
        if self.status is None:
            raise RuntimeError("the WSGI app produced a body before calling start_response()")
        if self.remaining is not None:
            if len(chunk) >= self.remaining:
                chunk = chunk[: self.remaining]
                last = True
            elif last and not self._bodiless:
                last = False  # short of its Content-Length: finish() cuts it
            self.remaining -= len(chunk)
        chunk = bytes(chunk)
        if not self.started:
            self.started = True
            self.done = last
            self.sink.start(self.status, self.headers, chunk, last)
        else:
            self.done = last
            self.sink.body(chunk)
            if last:
                self.sink.end()

    @property
    def _bodiless(self) -> bool:
        return self.head or self.status in (204, 304)

    def finish(self) -> None:
        """The iterable is exhausted: end the response, or cut it if it fell short."""
        if self.done:
            return
        if self.status is None:
            raise RuntimeError("the WSGI app returned without calling start_response()")
        if self.remaining and not self._bodiless:
            if not self.started:  # nothing sent yet: an honest 500 instead
                raise RuntimeError(f"the WSGI app declared Content-Length {self.remaining} and sent no body")
            self.sink.abort(f"the app sent {self.remaining} bytes less than its Content-Length")
            self.done = True
            return
        self.done = True
        if self.started:
            self.sink.end()
        else:
            self.started = True
            self.sink.start(self.status, self.headers, b"", True)


def run_wsgi(
    app: Callable[..., Iterable[bytes]],
    environ: dict[str, Any],
    sink: ResponseSink,
    log_error: Callable[[str], None],
) -> None:
    """Call ``app`` for ``environ`` and push the whole response into ``sink``.

    Never raises for the app's errors (they are logged and turned into a 500 or
    a cut response); errors of the sink itself (the peer vanished) propagate.
    """
    response = StartResponse(sink, head=environ.get("REQUEST_METHOD") == "HEAD")
    iterable: Any = None
    try:
        iterable = app(environ, response)
        send_file = getattr(sink, "send_file", None)
        if send_file is not None and send_file(response, iterable):
            pass  # the sink took the whole response (a file handed over by descriptor)
        # A one-element list or tuple (most frameworks' plain responses) is known
        # to be complete at its first chunk: status, headers and body travel together.
        elif isinstance(iterable, (list, tuple)) and len(iterable) == 1:
            response.send(iterable[0], last=True)
        else:
            for chunk in iterable:
                if chunk:
                    response.send(chunk, last=False)
                    if response.done or sink.cancelled():
                        break
        # A complete response needs no look for a CANCEL (a non-blocking read,
        # a syscall per request): there is nothing left to cut.
        if not response.done and not sink.cancelled():
            response.finish()
    except SinkGone:
        raise
    except Exception:
        _fail(response, sink, log_error, "Error in WSGI application")
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            try:
                close()
            except SinkGone:
                raise
            except Exception:
                _fail(response, sink, log_error, "Error closing the WSGI iterable")


def _fail(response: StartResponse, sink: ResponseSink, log_error: Callable[[str], None], what: str) -> None:
    log_error(f"{what}:\n{traceback.format_exc()}")
    if response.done:
        return
    response.done = True
    if response.started:
        sink.abort(what)
    else:
        response.started = True
        sink.start(500, INTERNAL_ERROR_HEADERS, INTERNAL_ERROR_BODY, True)
