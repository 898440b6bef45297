"""Request-head limits for the uvicorn front: bounded while reading, like gunicorn.

uvicorn bounds nothing with httptools (header bytes are even concatenated
piece by piece, quadratically) and only the whole head with h11.  The
protocol classes here subclass uvicorn's own (:mod:`.httptools_proto`,
:mod:`.h11_proto`; the HTTP parsing stays uvicorn's) and add, per connection:

* gunicorn's ``limit_request_line`` (414), ``limit_request_fields`` and
  ``limit_request_field_size`` (431), checked as the bytes arrive, so a
  connection holds at most about one head's worth of the limits plus one read;
* a header-read timeout (nginx's ``client_header_timeout``): 408, or a plain
  close for a connection that never sent a byte;
* a cap on open connections, refused at accept before file descriptors run out;
* a send timeout (nginx's ``send_timeout``): a connection whose client accepted
  no byte of a response for that long is closed.

``protocol_class(http, limits)`` makes the class uvicorn's ``Config(http=...)`` takes.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Any

__all__ = ["HeadLimits", "auto_connection_limit", "protocol_class", "HTTP_CHOICES"]

#: gunicorn's caps on its settings.
MAX_REQUEST_LINE = 8190
MAX_FIELDS = 32768
#: What "0 = unlimited" means for a line or a field: still a bound.
UNLIMITED = 1024 * 1024
#: No head may exceed this, whatever the limits (the IPC frame limit is 64 MiB;
#: the front refuses heads past 32 MiB, see :mod:`a2wsgi_mp.pool.app`).
HARD_HEAD = 16 * 1024 * 1024

HTTP_CHOICES = ("auto", "httptools", "h11")


@dataclass(frozen=True)
class HeadLimits:
    """The limits of one server, in gunicorn's terms and with gunicorn's defaults."""

    #: Bytes of the request line ("GET /path?query HTTP/1.1"); 0 = unlimited (1 MiB), max 8190.
    line: int = 4094
    #: Header fields per request; 0 = gunicorn's maximum, 32768.
    fields: int = 100
    #: Bytes of one header line ("Name: value" and CRLF); 0 = unlimited (1 MiB).
    field_size: int = 8190
    #: Seconds a client has to send a whole request head (0 = no limit).
    header_timeout: float = 60.0
    #: Open connections beyond which new ones are closed at once (0 = no cap).
    connections: int = 0
    #: Bytes of the whole head (431 past it); 0 = what the three limits above
    #: allow (~800 KB with gunicorn's defaults; nginx allows 4 x 8 KB).
    head: int = 0
    #: Seconds a client may accept no byte of a response before the connection
    #: is closed (nginx's ``send_timeout``; 0 = no limit).
    send_timeout: float = 60.0

    @classmethod
    def gunicorn(cls, line: int, fields: int, field_size: int, **extra: Any) -> "HeadLimits":
        """Normalise gunicorn-style values (negative, 0, past the caps) as gunicorn does."""
        line = MAX_REQUEST_LINE if line < 0 or line > MAX_REQUEST_LINE else line
        fields = MAX_FIELDS if fields <= 0 or fields > MAX_FIELDS else fields
        field_size = 8190 if field_size < 0 else field_size
        return cls(line=line, fields=fields, field_size=field_size, **extra)

    def __post_init__(self) -> None:
        if self.header_timeout < 0 or self.connections < 0 or self.head < 0 or self.send_timeout < 0:
            raise ValueError("header_timeout, connections, head and send_timeout must not be negative")

    @property
    def max_line(self) -> int:
        return self.line or UNLIMITED

    @property
    def max_field(self) -> int:
        return self.field_size or UNLIMITED

    @property
    def max_fields(self) -> int:
        return self.fields or MAX_FIELDS

    @property
    def max_head(self) -> int:
        """The largest head these limits allow (request line, fields, CRLFs)."""
        allowed = self.max_line + 2 + self.max_fields * (self.max_field + 2) + 2
        return min(HARD_HEAD, allowed, self.head or allowed)


def auto_connection_limit() -> int:
    """A cap that keeps file descriptors for the pool (sockets, spooled bodies):
    the soft ``RLIMIT_NOFILE`` less a tenth (at least 256)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 0
    return max(64, soft - max(256, soft // 10))


def protocol_class(http: str, limits: HeadLimits, lean: bool = True) -> type:
    """uvicorn's protocol class for ``http`` ("auto", "httptools", "h11"), bounded by ``limits``;
    with httptools and ``lean``, a2wsgi_mp's own protocol in front of it (:mod:`.lean`)."""
    if http == "auto":
        try:
            import httptools  # noqa: F401
        except ImportError:  # pragma: no cover
            http = "h11"
        else:
            http = "httptools"
    if http == "httptools":
        from .httptools_proto import LimitedHttpToolsProtocol as base
    elif http == "h11":
        from .h11_proto import LimitedH11Protocol as base  # type: ignore[assignment]
    else:
        raise ValueError(f"http must be one of {HTTP_CHOICES}, not {http!r}")
    attrs = {"limits": limits, "parser": http, "__module__": base.__module__, "_max_line": limits.max_line,
             "_max_field": limits.max_field, "_max_fields": limits.max_fields, "_max_head": limits.max_head}
    bounded = type(base.__name__, (base,), attrs)
    if http == "httptools" and lean and bounded.fast_path_hook:  # type: ignore[attr-defined]
        # The common request served by a2wsgi_mp's own protocol, the rest handed over (headlimits.lean).
        from .lean import LeanProtocol

        attrs.update(handover_class=bounded, fast_path_hook=True, __module__=LeanProtocol.__module__)
        return type(LeanProtocol.__name__, (LeanProtocol,), attrs)
    return bounded
