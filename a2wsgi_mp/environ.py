"""Translate an ASGI HTTP scope into a PEP 3333 environ.

The front never builds the environ itself: it ships a *request head* (the
msgpack-clean subset of the scope, see :func:`request_head`) and the worker
process turns it into an environ with :func:`build_environ`.  Doing the work in
the worker keeps it off the event loop, which is the front's bottleneck, and
keeps everything on the wire plain data (no locks, no file objects: the reason
nobody pickles environs into process pools).
"""

from __future__ import annotations

import io
import itertools
import logging
import sys
from typing import IO, Any, Iterable, Mapping

from .types import Environ

#: What :func:`add_headers` does with a header name containing "_", which would
#: otherwise land on the same key as the dashed name (``X_Forwarded_For`` ->
#: ``HTTP_X_FORWARDED_FOR``): "drop" it (gunicorn >= 22, nginx), "refuse" the
#: request (:class:`UnderscoreHeader`, a 400) or keep it ("dangerous").
HEADER_MAPS = ("drop", "refuse", "dangerous")

logger = logging.getLogger("a2wsgi_mp")
_dropped_logged = False


class UnderscoreHeader(ValueError):
    """A header name with an underscore, under ``header_map="refuse"``."""

#: The scope keys a worker needs.  Everything else (``state``, ``extensions``,
#: server objects) stays in the front.
HEAD_KEYS = (
    "method",
    "scheme",
    "path",
    "query_string",
    "root_path",
    "headers",
    "client",
    "server",
    "http_version",
)


#: The request head as it crosses to a worker (IPC protocol version 3): these fields, in this
#: order, as an array: a map's ten key strings cost the worker more to decode than the rest of
#: the head.  ``header_map``: None for "drop" (the pool's front sets it only otherwise);
#: ``direct``: the front takes an OFFER of a streamed body (``pool/direct.py``).
HEAD_FIELDS = (*HEAD_KEYS, "header_map", "direct")


def head_fields(head: Mapping[str, Any]) -> tuple:
    """A head (or a scope) as the array of :data:`HEAD_FIELDS` (an absent key is None;
    ``direct`` a bool: whether the key is there)."""
    get = head.get
    return (get("method"), get("scheme"), get("path"), get("query_string"), get("root_path"), get("headers"),
            get("client"), get("server"), get("http_version"), get("header_map"), "direct" in head)


def request_head(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The msgpack-clean part of ``scope`` that crosses the process boundary."""
    try:  # (every key there, as from uvicorn: one dict display, the front's hot path)
        head = {"method": scope["method"], "scheme": scope["scheme"], "path": scope["path"],
                "query_string": scope["query_string"], "root_path": scope["root_path"],
                "headers": scope["headers"], "client": scope["client"], "server": scope["server"],
                "http_version": scope["http_version"]}
    except KeyError:
        head = {key: scope[key] for key in HEAD_KEYS if key in scope}
    headers = head.get("headers")
    if headers is not None and not isinstance(headers, list):
        head["headers"] = list(headers)
    return head


def head_size(scope: Mapping[str, Any]) -> int:
    """About the bytes the head takes on the wire to a worker (a lower bound
    give or take msgpack's few bytes per item), computed in C: cheap enough to
    check on every request."""
    headers = scope.get("headers") or ()
    return (
        sum(map(len, itertools.chain.from_iterable(headers)))
        + len(scope.get("path") or "")
        + len(scope.get("query_string") or b"")
        + len(scope.get("root_path") or "")
    )


def _latin1_path(path: str) -> str:
    # PEP 3333: native strings hold bytes; the path's UTF-8 bytes, as latin-1.
    # (An ASCII path, nearly every one, is its own answer: ``isascii`` is O(1).)
    return path if path.isascii() else path.encode("utf-8").decode("latin-1")


def build_environ(
    scope: Mapping[str, Any],
    body: IO[bytes],
    *,
    errors: IO[str] | io.TextIOBase | None = None,
    multithread: bool = False,
    multiprocess: bool = True,
    file_wrapper: Any = None,
    body_length: int | None = None,
    header_map: str | None = None,
) -> Environ:
    """A PEP 3333 environ for ``scope`` whose ``wsgi.input`` is ``body``.

    ``body`` must already hold the whole request body (the front spools it
    before dispatch), which is why ``wsgi.input_terminated`` is always true and
    chunked uploads need no ``CONTENT_LENGTH``.  ``header_map`` (see
    :data:`HEADER_MAPS`) defaults to the head's ``"header_map"`` key, which the
    pool's front sets only when it is not "drop".  Given ``body_length``, a
    request that came without ``Content-Length`` (chunked) gets one anyway:
    Django and many older apps read exactly ``CONTENT_LENGTH`` bytes and would
    otherwise see an empty body.
    """
    return environ_from_head(head_fields(scope), body, errors, multithread, multiprocess, file_wrapper, body_length,
                             header_map)


def environ_from_head(
    head: tuple,
    body: IO[bytes],
    errors: IO[str] | io.TextIOBase | None = None,
    multithread: bool = False,
    multiprocess: bool = True,
    file_wrapper: Any = None,
    body_length: int | None = None,
    header_map: str | None = None,
) -> Environ:
    """:func:`build_environ` of a head as it comes to a worker: the array of :data:`HEAD_FIELDS`
    (:func:`head_fields`; None for an absent field)."""
    method, scheme, path, query, root_path, headers, client, server, http_version, head_map, _direct = head
    root_path = root_path or ""
    path = path or ""
    # The ASGI spec says ``path`` includes ``root_path``; older routers strip it.
    # Only a whole-segment prefix counts: "/appendix" is not under "/app".
    if root_path:
        if path.startswith(root_path):
            rest = path[len(root_path) :]
            if not rest or rest[0] == "/" or root_path.endswith("/"):
                path = rest
        if not root_path.isascii():
            root_path = _latin1_path(root_path)
    query = query or b""
    server = server or ("localhost", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method if method is not None else "GET",
        "SCRIPT_NAME": root_path,
        "PATH_INFO": path if path.isascii() else _latin1_path(path),  # (_latin1_path inline: nearly every path)
        "QUERY_STRING": query.decode("latin-1") if isinstance(query, bytes) else query,
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]) if server[1] is not None else "80",
        "SERVER_PROTOCOL": "HTTP/" + (http_version if http_version is not None else "1.1"),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme if scheme is not None else "http",
        "wsgi.input": body,
        "wsgi.errors": errors if errors is not None else sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    if file_wrapper is not None:
        environ["wsgi.file_wrapper"] = file_wrapper
    add_headers(environ, headers or (), header_map or head_map or "drop")
    if body_length and "CONTENT_LENGTH" not in environ:
        environ["CONTENT_LENGTH"] = str(body_length)
    return environ


#: Header name (as it came) -> its environ key, for names without "_" (whose
#: key does not depend on ``header_map``).  Clients send a few dozen names, so
#: a header costs one dict lookup instead of a decode, an upper() and a replace().
#: Bounded: past :data:`_KEYS_MAX` names, new ones are mapped each time.
_KEYS: dict[bytes, str] = {}
_KEYS_MAX = 1024


def _header_key(raw_name: bytes) -> str:
    name = raw_name.decode("latin-1").upper().replace("-", "_")
    key = name if name == "CONTENT_TYPE" or name == "CONTENT_LENGTH" else "HTTP_" + name
    if len(_KEYS) < _KEYS_MAX and b"_" not in raw_name:
        _KEYS[raw_name] = key
    return key


def add_headers(environ: Environ, headers: Iterable[tuple[bytes, bytes]], header_map: str = "drop") -> None:
    """Add CONTENT_TYPE, CONTENT_LENGTH and HTTP_* keys; repeats join with ','.

    Names with "_" follow ``header_map``.  The check is here, in the worker,
    rather than in the front: it costs one ``in`` per header, off the event
    loop, and it holds whatever ASGI server sits in front of the pool.
    """
    keys = _KEYS
    for raw_name, raw_value in headers:
        key = keys.get(raw_name)
        if key is None:
            if b"_" in raw_name and header_map != "dangerous":
                if header_map == "refuse":
                    raise UnderscoreHeader(f"header name with an underscore: {raw_name.decode('latin-1')!r}")
                _log_dropped(raw_name)
                continue
            key = _header_key(raw_name)
        value = raw_value.decode("latin-1")
        if key in environ:
            # RFC 9110 §5.3: repeated fields are a comma-separated list.
            # (Cookie uses "; " per RFC 6265, which every WSGI framework parses.)
            sep = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = environ[key] + sep + value
        else:
            environ[key] = value


def _log_dropped(name: bytes) -> None:
    global _dropped_logged
    if not _dropped_logged:
        _dropped_logged = True
        logger.warning("dropped the request header %r: names with underscores are ignored, as by gunicorn "
                       "and nginx (header_map='dangerous' keeps them; this is logged once)",
                       name.decode("latin-1"))
