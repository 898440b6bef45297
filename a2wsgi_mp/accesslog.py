"""The access log: one line per request, in gunicorn's ``access_log_format``.

Every request the front answers (or gives up on) leaves one line, refusals
included: the record (:class:`~a2wsgi_mp.record.Record`) goes to
:class:`AccessLog`, which logs ``format % atoms`` on the ``a2wsgi_mp.access``
logger, as gunicorn's ``glogging`` does.  The format is compiled once (the
atoms it names, each with its getter), so a line computes only its own atoms;
a logger that is off costs one level check, and the record handed to the
handlers carries the request (``record.access``) for structured formatters
(``--log-format json``).

gunicorn's atoms, with gunicorn's meaning (``h`` remote address, ``l`` ``-``,
``u`` basic-auth user, ``t`` time, ``r`` request line, ``m`` method, ``U``
path, ``q`` query, ``H`` protocol, ``s`` status, ``b``/``B`` response body
bytes, ``f`` referer, ``a`` user agent, ``T``/``M``/``D``/``L`` duration in
s/ms/µs/decimal seconds, ``p`` ``<pid>`` of this process, ``{name}i`` a request
header, ``{name}o`` a response header, ``{NAME}e`` a CGI variable), and ours:

* ``w``: the pid of the worker process that served the request (``-``: none);
* ``Q``: seconds spent queued for a worker, as ``L`` (``0.000000``: none);
* ``I``: request body bytes received;
* ``R``: why the front answered itself (``queue full``, ``worker died``,
  ``URI Too Long``...), ``-`` when the app answered.

As in gunicorn, an unknown atom reads ``-`` and ``"`` in values is escaped.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any, Callable, Iterator

from .record import Record

__all__ = ["AccessLog", "Atoms", "DEFAULT_FORMAT", "GUNICORN_FORMAT"]

#: gunicorn's default ``access_log_format`` (Apache's combined log format, less the ident).
GUNICORN_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
#: Ours: gunicorn's, then the duration, the time queued, the worker pid and (last, so
#: it may hold spaces) the front's reason for answering itself.
DEFAULT_FORMAT = GUNICORN_FORMAT + " %(L)s %(Q)s %(w)s %(R)s"

logger = logging.getLogger("a2wsgi_mp.access")


def _header(scope: Mapping[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return "-"


def _raw_uri(scope: Mapping[str, Any]) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw is not None else scope.get("path", "-")
    query = scope.get("query_string")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _user(scope: Mapping[str, Any]) -> str:
    """The user name of a ``Basic`` Authorization header, as gunicorn reads it."""
    auth = _header(scope, b"authorization")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return "-"
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return "-"
    return decoded.split(":", 1)[0] or "-"


_clock: list[Any] = [0, ""]


def _now() -> str:
    """gunicorn's ``%(t)s``, made once a second."""
    second = int(time.time())
    if _clock[0] != second:
        _clock[0], _clock[1] = second, time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second))
    return _clock[1]


def _seconds(value: float) -> str:
    return f"{value:.6f}"  # gunicorn's %(L)s: seconds, to the microsecond


def _protocol(scope: Mapping[str, Any]) -> str:
    return "HTTP/" + scope.get("http_version", "1.1")


def _cgi(scope: Mapping[str, Any], name: str) -> str:
    """The CGI variables the front knows without the worker's environ (``{NAME}e``)."""
    if name == "request_method":
        return scope.get("method", "-")
    if name == "path_info":
        return scope.get("path", "-")
    if name == "query_string":
        return (scope.get("query_string") or b"").decode("latin-1")
    if name == "server_protocol":
        return _protocol(scope)
    if name == "remote_addr":
        client = scope.get("client")
        return client[0] if client else "-"
    if name == "script_name":
        return scope.get("root_path", "")
    if name == "raw_uri":
        return _raw_uri(scope)
    if name == "wsgi.url_scheme":
        return scope.get("scheme", "http")
    return "-"


_ATOMS: dict[str, Callable[[Record], Any]] = {
    "h": lambda r: (r.scope.get("client") or ("-",))[0],
    "l": lambda r: "-",
    "u": lambda r: _user(r.scope),
    "t": lambda r: _now(),
    "r": lambda r: f"{r.scope['method']} {_raw_uri(r.scope)} {_protocol(r.scope)}" if "method" in r.scope else "-",
    "s": lambda r: r.status or "-",
    "m": lambda r: r.scope.get("method", "-"),
    "U": lambda r: r.scope.get("path", "-"),
    "q": lambda r: (r.scope.get("query_string") or b"").decode("latin-1"),
    "H": lambda r: _protocol(r.scope),
    "b": lambda r: str(r.bytes_out) if r.status else "-",
    "B": lambda r: r.bytes_out,
    "f": lambda r: _header(r.scope, b"referer"),
    "a": lambda r: _header(r.scope, b"user-agent"),
    "T": lambda r: int(r.duration),
    "D": lambda r: round(r.duration * 1_000_000),  # gunicorn: of a timedelta, to the microsecond
    "M": lambda r: int(r.duration * 1000),
    "L": lambda r: _seconds(r.duration),
    "p": lambda r: "<%s>" % os.getpid(),
    "w": lambda r: r.pid or "-",
    "Q": lambda r: _seconds(r.queued),
    "I": lambda r: r.bytes_in,
    "R": lambda r: r.reason or "-",
}


def _getter(key: str) -> Callable[[Record], Any]:
    """The function computing atom ``key`` of a record (``-`` for an unknown one), as gunicorn reads it."""
    atom = _ATOMS.get(key)
    if atom is not None:
        return atom
    if key.startswith("{") and len(key) > 3 and key[-2] == "}":
        name, kind = key[1:-2].lower(), key[-1]
        raw = name.encode("latin-1", "replace")
        if kind == "i":
            return lambda r: _header(r.scope, raw)
        if kind == "o":
            return lambda r: next((v.decode("latin-1") for k, v in r.headers if k.lower() == raw), "-")
        if kind == "e":
            return lambda r: _cgi(r.scope, name)
    return lambda r: "-"


def _escaped(value: Any) -> Any:
    return value.replace('"', '\\"') if isinstance(value, str) else value


class Atoms(Mapping[str, Any]):
    """gunicorn's atoms of one record, as a mapping (computed on access)."""

    __slots__ = ("record",)

    def __init__(self, record: Record) -> None:
        self.record = record

    def __getitem__(self, key: str) -> Any:
        return _escaped(_getter(key)(self.record))

    def __iter__(self) -> Iterator[str]:
        return iter(_ATOMS)

    def __len__(self) -> int:
        return len(_ATOMS)

    def fields(self) -> dict[str, Any]:
        """The record as structured fields (the JSON log format's access fields)."""
        r = self.record
        scope = r.scope
        return {
            "remote_addr": self["h"], "method": scope.get("method", "-"), "path": scope.get("path", "-"),
            "query": self["q"], "protocol": self["H"], "status": r.status or None, "bytes_in": r.bytes_in,
            "bytes_out": r.bytes_out, "duration": round(r.duration, 6), "queued": round(r.queued, 6),
            "worker_pid": r.pid, "reason": r.reason or None, "user_agent": self["a"], "referer": self["f"],
        }


class AccessLog:
    """Logs one line per finished record: ``format`` filled with its atoms."""

    def __init__(self, format: str = DEFAULT_FORMAT, log: logging.Logger | None = None) -> None:
        probe = Record({"type": "http", "headers": ()}, time.perf_counter())
        try:
            format % Atoms(probe)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"bad access log format {format!r}: {exc}") from None
        self.format = format
        self.logger = log or logger
        self._getters = [(key, _getter(key)) for key in dict.fromkeys(re.findall(r"%\(([^)]*)\)", format))]

    def line(self, record: Record) -> str:
        return self.format % {key: _escaped(get(record)) for key, get in self._getters}

    def __call__(self, record: Record) -> None:
        log = self.logger
        if log.isEnabledFor(logging.INFO):
            # logger.info() without its caller lookup (a stack walk): the line's place in our code says nothing.
            entry = log.makeRecord(log.name, logging.INFO, __file__, 0, self.line(record), (), None)
            entry.access = Atoms(record)
            log.handle(entry)
