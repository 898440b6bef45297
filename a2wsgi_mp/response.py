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
* an error before the response started becomes a 500; after, the response is cut;
* status and headers are checked here, once for every entry point (see
  :func:`encode_headers`), so an ASGI server never meets a header it refuses
  after it has logged a ``200``.
"""

from __future__ import annotations

import re
import traceback
from typing import Any, Callable, Iterable, Mapping, Protocol

from .replies import CLOSE, plain_headers
from .types import Environ

Headers = list[tuple[bytes, bytes]]

INTERNAL_ERROR_BODY = b"Internal Server Error"
#: ``Connection: close``, as gunicorn's error page: an entry point may re-raise the
#: app's error once this 500 is out (a2wsgi's behaviour), and a server that sees an
#: exception after a complete response closes the connection; announced, a client
#: never loses the next request it queued on it.
INTERNAL_ERROR_HEADERS: Headers = plain_headers(INTERNAL_ERROR_BODY, [CLOSE])

# RFC 9110 §5.6.2: a field name is a token.
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+").fullmatch
# RFC 9110 §5.5: a field value holds no CTL but HTAB (so no CR, LF or NUL: no
# header injection), nor DEL.  Exactly what uvicorn's httptools protocol and
# gunicorn refuse; with the OWS stripped below, also all that h11 refuses.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search
# PEP 3333: "NNN reason", the reason free of CTLs but HTAB (RFC 9112 §4,
# reason-phrase).  A bare "NNN" passes, as with gunicorn: ASGI carries no reason.
_STATUS = re.compile(r"([0-9]{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?").fullmatch
_OWS = " \t"


class InvalidHeader(ValueError):
    """A status or header the app gave ``start_response`` that HTTP cannot carry."""


#: Status lines already checked -> their code.  Apps use a handful, so checking one is
#: mostly one dict lookup instead of a regular expression.
_STATUSES: dict[str, int] = {}
_STATUSES_MAX = 256


def parse_status(status: Any) -> int:
    """The code of a PEP 3333 status line ``"NNN reason"``.

    A final status only (200-599): RFC 9110 §15 makes 1xx interim responses,
    which a WSGI app cannot send, and h11 refuses them as a final response.
    """
    if type(status) is str:
        code = _STATUSES.get(status)
        if code is not None:
            return code
    match = _STATUS(status) if isinstance(status, str) else None
    code = int(match.group(1)) if match else 0
    if not 200 <= code <= 599:
        raise InvalidHeader(f"invalid WSGI status line {status!r}: it must be 'NNN reason' with 200 <= NNN <= 599")
    if type(status) is str and len(_STATUSES) < _STATUSES_MAX:
        _STATUSES[status] = code
    return code


#: Header names already checked, as the app spells them -> lower-cased bytes.
#: Apps use a few dozen names, so checking a name is mostly one dict lookup.
_NAMES: dict[str, bytes] = {}
_NAMES_MAX = 1024
_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"


def _check_name(name: str) -> bytes:
    stripped = name.strip(_OWS)
    if not _TOKEN(stripped):  # a token is ASCII: it always encodes
        raise InvalidHeader(f"invalid header name {stripped!r}")
    lname = stripped.lower().encode("ascii")
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[name] = lname
    return lname


def encode_headers(headers: Any) -> tuple[Headers, int | None]:
    """PEP 3333 ``response_headers`` as ASGI wants them, and the declared Content-Length.

    Names are lower-cased; optional whitespace (SP, HTAB) around names and
    values is stripped, as a2wsgi and gunicorn do (Django's ``Set-Cookie``
    values start with a space, which h11 refuses).  Anything else HTTP cannot
    carry raises :class:`InvalidHeader` naming the header, and the caller turns
    it into a 500.  ``Transfer-Encoding`` is dropped: framing is the server's
    (PEP 3333 forbids hop-by-hop headers; gunicorn drops them too).
    """
    encoded: Headers = []
    remaining: int | None = None
    for name, value in headers:
        if type(name) is not str or type(value) is not str:
            if not isinstance(name, str) or not isinstance(value, str):
                raise InvalidHeader(f"header {name!r}: names and values must be str")
            name, value = str(name), str(value)
        lname = _NAMES.get(name) or _check_name(name)
        value = value.strip(_OWS)
        # Printable ASCII (SP to "~": nearly every value) is valid and encodes as it is,
        # without the regular expression; anything else is checked in full.
        if value.isascii() and value.isprintable():
            bvalue = value.encode("ascii")
        else:
            if _BAD_VALUE(value):
                raise InvalidHeader(f"header {name.strip(_OWS)!r}: its value holds a control character")
            try:
                bvalue = value.encode("latin-1")
            except UnicodeEncodeError:
                raise InvalidHeader(
                    f"header {name.strip(_OWS)!r}: its value is not latin-1 (UnicodeEncodeError)") from None
        if lname == _CONTENT_LENGTH:
            if not (value.isascii() and value.isdigit()):
                raise InvalidHeader(f"header {name.strip(_OWS)!r}: invalid Content-Length {value!r}")
            length = int(value)
            if remaining is not None:
                if remaining != length:
                    raise InvalidHeader(f"header {name.strip(_OWS)!r}: conflicting Content-Length values")
                continue
            remaining = length
        elif lname == _TRANSFER_ENCODING:
            continue
        encoded.append((lname, bvalue))
    return encoded, remaining


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

    __slots__ = ("sink", "status", "headers", "started", "done", "remaining", "head", "handled")

    def __init__(self, sink: ResponseSink, head: bool = False) -> None:
        self.sink = sink
        #: A HEAD request: its Content-Length describes a body that is not sent.
        self.head = head
        self.status: int | None = None
        self.headers: Headers = []
        self.started = False
        self.done = False
        self.remaining: int | None = None
        #: The exception of an ``exc_info`` the app passed while the headers
        #: could still be replaced: an error it handled (an error page).
        self.handled: BaseException | None = None

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
                self.handled = exc_info[1]
            finally:
                exc_info = None
        elif self.status is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        code = parse_status(status)
        encoded, remaining = encode_headers(headers)
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
        if chunk.__class__ is not bytes:
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
    environ: Environ,
    sink: ResponseSink,
    log_error: Callable[[str], None],
) -> BaseException | None:
    """Call ``app`` for ``environ`` and push the whole response into ``sink``.

    Never raises for the app's errors: they are logged (the line names the
    request), turned into a 500 or a cut response, and the first one is
    returned, so an entry point may re-raise it once the response is out (as
    a2wsgi does, for error trackers and test clients).  Failing that, the
    exception of an ``exc_info`` the app passed to ``start_response`` for its
    own error page is returned (not logged: the app has reported it).  Errors
    of the sink itself (the peer vanished) propagate.
    """
    response = StartResponse(sink, head=environ.get("REQUEST_METHOD") == "HEAD")
    iterable: Any = None
    error: BaseException | None = None
    try:
        iterable = app(environ, response)
        # A one-element list or tuple (most frameworks' plain responses) is known
        # to be complete at its first chunk: status, headers and body travel together.
        # (A list is no file wrapper: no look at the sink's send_file for it.)
        if isinstance(iterable, (list, tuple)) and len(iterable) == 1:
            response.send(iterable[0], last=True)
        elif (send_file := getattr(sink, "send_file", None)) is not None and send_file(response, iterable):
            pass  # the sink took the whole response (a file handed over by descriptor)
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
    except Exception as exc:
        error = exc
        _fail(response, sink, log_error, "Error in WSGI application", environ)
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            try:
                close()
            except SinkGone:
                raise
            except Exception as exc:
                if error is None:
                    error = exc
                _fail(response, sink, log_error, "Error closing the WSGI iterable", environ)
    return error if error is not None else response.handled


def describe_request(environ: Mapping[str, Any]) -> str:
    """``GET /path?query`` of an environ, for log lines."""
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING")
    return f"{environ.get('REQUEST_METHOD', '?')} {path}{'?' + query if query else ''}"


def _fail(
    response: StartResponse, sink: ResponseSink, log_error: Callable[[str], None], what: str, environ: Environ
) -> None:
    log_error(f"{what} ({describe_request(environ)}):\n{traceback.format_exc()}")
    if response.done:
        return
    response.done = True
    if response.started:
        sink.abort(what)
    else:
        response.started = True
        sink.start(500, INTERNAL_ERROR_HEADERS, INTERNAL_ERROR_BODY, True)
