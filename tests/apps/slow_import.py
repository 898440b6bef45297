"""A WSGI app whose import takes a minute (a large Django project's cold start, exaggerated):
each import appends its pid to the file named by $SLOW_IMPORT_LOG first, so a test knows when
the loading is under way."""

import os
import time

with open(os.environ["SLOW_IMPORT_LOG"], "a") as f:
    f.write(f"{os.getpid()}\n")
time.sleep(60)


def app(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"loaded"]
