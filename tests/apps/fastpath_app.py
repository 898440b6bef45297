"""The WSGI app behind tests/test_fastpath.py: one route per case the fast path
takes (complete responses) or hands back to the ASGI path (everything else)."""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _query(environ)
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
        return [b"Hello, world!"]
    if path == "/nolength":  # complete, no Content-Length: the fast path adds one
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Route", "nolength")])
        return [b"no length given"]
    if path == "/big":  # complete, large: for a client that does not read
        n = int(q.get("n", "1000"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(n))])
        return [b"b" * n]
    if path == "/stream":  # streamed: the relay's
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part %d;" % i for i in range(3))
    if path == "/status":
        code = int(q.get("code", "200"))
        start_response(f"{code} Whatever", [("Content-Length", "0")] if code not in (204, 304) else [])
        return [b""]
    if path == "/close":  # the app asks for the connection to close
        start_response("200 OK", [("Content-Length", "2"), ("Connection", "close")])
        return [b"ok"]
    if path == "/crash":
        os._exit(3)
    if path == "/sleep":
        if "token" in q:  # say it started
            open(os.path.join(os.environ["FASTPATH_RECORD_DIR"], q["token"]), "w").close()
        time.sleep(float(q.get("s", "1")))
        start_response("200 OK", [("Content-Length", "5")])
        return [b"slept"]
    if path == "/record":  # leaves a trace of having run (in $FASTPATH_RECORD_DIR)
        open(os.path.join(os.environ["FASTPATH_RECORD_DIR"], q["token"]), "w").close()
        start_response("200 OK", [("Content-Length", "8")])
        return [b"recorded"]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/client":
        body = f"{environ.get('REMOTE_ADDR')} {environ.get('wsgi.url_scheme')}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
