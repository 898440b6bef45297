"""The CLI's request-head options, kept here so cli.py only calls two functions."""

from __future__ import annotations

import argparse

from . import HTTP_CHOICES, HeadLimits, auto_connection_limit, protocol_class

__all__ = ["add_options", "http_protocol"]

_DEFAULTS = HeadLimits()


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("request head limits (gunicorn's names and defaults)")
    group.add_argument("--http", choices=HTTP_CHOICES, default="auto",
                       help="HTTP parser: httptools (auto, when installed) or h11 (default: %(default)s)")
    group.add_argument("--limit-request-line", type=int, default=_DEFAULTS.line, metavar="BYTES",
                       help="414 for a longer request line; 0 = 1 MiB (default: %(default)s, max 8190)")
    group.add_argument("--limit-request-fields", type=int, default=_DEFAULTS.fields, metavar="N",
                       help="431 for more header fields (default: %(default)s, max 32768)")
    group.add_argument("--limit-request-field-size", type=int, default=_DEFAULTS.field_size, metavar="BYTES",
                       help="431 for a longer header line; 0 = 1 MiB (default: %(default)s)")
    group.add_argument("--limit-request-head", type=int, default=_DEFAULTS.head, metavar="BYTES",
                       help="431 for a larger head in all; 0 = what the limits above allow, about 800 KB "
                            "(default: %(default)s; 65536 keeps what a slow client can hold near nginx's 32 KB)")
    group.add_argument("--header-timeout", type=float, default=_DEFAULTS.header_timeout, metavar="SECONDS",
                       help="408 (or a plain close if nothing came) for a request head not complete in time; "
                            "0 = off (default: %(default)s)")
    group.add_argument("--limit-connections", type=int, default=None, metavar="N",
                       help="close new connections at once while N are open; 0 = no cap "
                            f"(default: the open-files limit less a tenth, here {auto_connection_limit()})")


def http_protocol(args: argparse.Namespace) -> type:
    """The uvicorn protocol class for ``Config(http=...)``; ValueError on bad values."""
    connections = auto_connection_limit() if args.limit_connections is None else args.limit_connections
    limits = HeadLimits.gunicorn(
        args.limit_request_line,
        args.limit_request_fields,
        args.limit_request_field_size,
        header_timeout=args.header_timeout,
        connections=connections,
        head=args.limit_request_head,
    )
    return protocol_class(args.http, limits)
