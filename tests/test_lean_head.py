"""The lean protocol's request head, built as the array the IPC carries (``WSGIPool._worker_fields``):
the same array, the same frame bytes, as the map the ASGI path builds (``_worker_head``) once encoded."""

from __future__ import annotations

from typing import Any

import pytest

from a2wsgi_mp import WSGIPool
from a2wsgi_mp.environ import head_fields
from a2wsgi_mp.ipc import protocol


def _scope(**changes: Any) -> dict[str, Any]:
    scope = {"type": "http", "http_version": "1.1", "server": ("127.0.0.1", 8000), "client": ("10.0.0.7", 51000),
             "scheme": "http", "root_path": "", "headers": [(b"host", b"example.org"), (b"accept", b"*/*")],
             "method": "GET", "path": "/caf\u00e9", "raw_path": b"/caf%C3%A9", "query_string": b"a=1&b=%20"}
    scope.update(changes)
    return scope


@pytest.mark.parametrize("options", [{}, {"header_map": "refuse"}, {"header_map": "dangerous"},
                                     {"direct_stream": False}, {"header_map": "refuse", "direct_stream": False}])
@pytest.mark.parametrize("changes", [{}, {"root_path": "/app", "path": "/app/x"}, {"http_version": "1.0"},
                                     {"method": "DELETE", "query_string": b""},
                                     {"scheme": "https", "client": ("203.0.113.9", 0)},  # (a proxy's, passed)
                                     {"headers": ((b"host", b"h"), (b"x-forwarded-for", b"203.0.113.9"))}])
def test_the_lean_head_is_the_map_s_array(options: dict[str, Any], changes: dict[str, Any]) -> None:
    pool = WSGIPool("tests.apps.fastpath_app:app", workers=1, **options)
    scope = _scope(**changes)
    fields = pool._worker_fields(scope)
    head = pool._worker_head(scope, None, direct_ok=True)
    assert fields == head_fields(head) and type(fields[5]) is list
    assert protocol.encode_request(7, fields, b"", 0) == protocol.encode_request(7, head, b"", 0)
    assert protocol.encode_request_shm(7, fields, 10) == protocol.encode_request_shm(7, head, 10)
    (event,) = _decoded(protocol.encode_request(7, fields, None, 0))
    assert event.head[10] is bool(pool.config.direct_stream)
    assert event.head[9] == (None if pool.config.header_map == "drop" else pool.config.header_map)
    assert event.head[:9] == _decoded(protocol.encode_request(7, head, None, 0))[0].head[:9]


def _decoded(frame: bytes) -> list[Any]:
    decoder = protocol.Decoder(lenient=True)
    decoder.feed(frame)
    return list(decoder.events())
