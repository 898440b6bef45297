"""The WSGI app the gunicorn worker tests serve (see tests/test_gunicorn_worker.py).

``GUNICORN_TEST_MARKERS`` names a directory where ``/slow`` leaves a file when
it starts, so a test knows the request is in flight.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import parse_qs

from tests.apps.markers import write_marker

MARKERS = os.environ.get("GUNICORN_TEST_MARKERS")


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/slow":
        seconds = float(query.get("s", ["1"])[0])
        tag = query.get("tag", ["slow"])[0]
        if MARKERS:
            write_marker(Path(MARKERS, f"started-{tag}-{os.getpid()}"), str(os.getpid()))
        time.sleep(seconds)
        body = f"slept {seconds} in {os.getpid()}".encode()
    elif path == "/environ":
        keys = ("wsgi.url_scheme", "REMOTE_ADDR", "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING")
        body = json.dumps({k: environ.get(k) for k in keys}).encode()
    elif path == "/echo":
        body = environ["wsgi.input"].read()
    else:
        body = f"hello from {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-Pid", str(os.getpid()))])
    return [body]
