"""Apps returning ``wsgi.file_wrapper`` objects, for tests/test_filewrapper.py."""

import io
import os

PATH = os.environ.get("FW_TEST_FILE", "/nonexistent")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    wrap = environ["wsgi.file_wrapper"]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return wrap(open(PATH, "rb"))
    if path == "/file-cl":
        start_response("200 OK", [("Content-Length", "1000")])
        return wrap(open(PATH, "rb"))
    if path == "/file-seek":
        f = open(PATH, "rb")
        f.seek(100)
        start_response("200 OK", [])
        return wrap(f, 4096)
    if path == "/file-short":
        start_response("200 OK", [("Content-Length", str(os.path.getsize(PATH) + 10))])
        return wrap(open(PATH, "rb"))
    if path == "/bytesio":
        start_response("200 OK", [])
        return wrap(io.BytesIO(b"x" * 100_000), 8192)
    if path == "/empty":
        empty = PATH + ".empty"
        open(empty, "wb").close()
        start_response("204 No Content", [])
        return wrap(open(empty, "rb"))
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
