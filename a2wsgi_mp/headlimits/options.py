"""The CLI's request-head settings (rows in :data:`a2wsgi_mp.cli.settings.OPTIONS`) as uvicorn's protocol class."""

from __future__ import annotations

from typing import Any

from . import HeadLimits, auto_connection_limit, protocol_class

__all__ = ["http_protocol"]


def http_protocol(settings: Any) -> type:
    """The uvicorn protocol class for ``Config(http=...)``; ValueError on bad values."""
    connections = auto_connection_limit() if settings.limit_connections is None else settings.limit_connections
    limits = HeadLimits.gunicorn(
        settings.limit_request_line,
        settings.limit_request_fields,
        settings.limit_request_field_size,
        header_timeout=settings.header_timeout,
        connections=connections,
        head=settings.limit_request_head,
        send_timeout=settings.send_timeout,
    )
    return protocol_class(settings.http, limits)
