"""Property: every header :func:`encode_headers` lets through is one h11 and uvicorn's httptools accept.

The point of issue 10: a header the ASGI server refuses after logging ``200``
means an empty reply; such headers must be a 500 here instead.
"""

from __future__ import annotations

import h11
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE

from a2wsgi_mp.response import InvalidHeader, encode_headers

# Text around the interesting edges: OWS, CTLs, DEL, separators, latin-1, beyond latin-1.
_chars = st.sampled_from(list(" \t\r\n\x00\x01\x0b\x0c\x1f\x7f\x80\xa0\xff:;,()\"=aZ09-_~!Ā€") + ["x"] * 8)
_text = st.text(_chars, max_size=12)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(_text, _text), max_size=4))
def test_what_passes_is_accepted_by_h11_and_httptools(headers) -> None:
    try:
        encoded, _ = encode_headers(headers)
    except InvalidHeader:
        return
    for name, value in encoded:
        assert type(name) is bytes and type(value) is bytes
        assert not HEADER_RE.search(name) and not HEADER_VALUE_RE.search(value)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(conn.next_event(), h11.Request)
    conn.send(h11.Response(status_code=200, headers=encoded))  # raises LocalProtocolError if not


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_text, _text), min_size=1, max_size=3))
def test_valid_headers_only_lose_their_ows(headers) -> None:
    try:
        encoded, _ = encode_headers(headers)
    except InvalidHeader:
        return
    kept = [(n, v) for n, v in headers if n.strip(" \t").lower() not in ("content-length", "transfer-encoding")]
    assert encoded == [(n.strip(" \t").lower().encode("latin-1"), v.strip(" \t").encode("latin-1")) for n, v in kept]
