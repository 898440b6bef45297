"""A WSGI app that records each import of itself, for the preload and elastic tests.

On import it appends ``pid`` to the file named by $PRELOAD_LOG and reads its
code version from the file named by $PRELOAD_VERSION (a deploy: change the
file, then reload); a version of ``broken`` fails the import.
"""

import json
import os
import time

with open(os.environ["PRELOAD_VERSION"]) as f:
    VERSION = f.read().strip()
if VERSION == "broken":
    raise RuntimeError("deploy gone wrong: this version does not import")
with open(os.environ["PRELOAD_LOG"], "a") as f:
    f.write(f"{os.getpid()}\n")


def application(environ, start_response):
    if environ["PATH_INFO"] == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or 0))
    body = json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "version": VERSION}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
