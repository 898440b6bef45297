"""Send a file a worker handed over by descriptor (``wsgi.file_wrapper``).

The worker is already free; the front sends the file with the server's
``http.response.pathsend`` when it can, else reads it in pieces off the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat

from ..ipc.fds import FileHandoff
from ..types import Message, Receive, Scope, Send

logger = logging.getLogger("a2wsgi_mp")


#: Piece size when the front streams a file handed over by a worker.
FILE_CHUNK = 1024 * 1024


def _pathsend_path(handoff: FileHandoff, scope: Scope) -> str | None:
    """``/proc/self/fd/N`` when the server does ``http.response.pathsend`` and
    that path really is the whole of this file; else None (stream it ourselves)."""
    extensions = scope.get("extensions") or {}
    if "http.response.pathsend" not in extensions or handoff.offset != 0:
        return None
    path = f"/proc/self/fd/{handoff.fd}"
    try:
        mine, there = os.fstat(handoff.fd), os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(there.st_mode) or (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
        return None
    if mine.st_size != handoff.length:
        return None
    return path


#: Longest the front keeps a pathsend file's descriptor open after the send.
PATHSEND_HOLD = 60.0


async def _until_disconnect(receive: Receive) -> None:
    while (await receive()).get("type") != "http.disconnect":
        pass


async def send_file(handoff: FileHandoff, scope: Scope, receive: Receive, send: Send) -> None:
    """Send a response whose body is a file a worker passed us; closes its fd."""
    fd = handoff.fd
    watcher: asyncio.Task[Message] | None = None
    pending: asyncio.Future[bytes] | None = None
    try:
        await send({"type": "http.response.start", "status": handoff.status, "headers": handoff.headers})
        path = _pathsend_path(handoff, scope)
        if path is not None:
            await send({"type": "http.response.pathsend", "path": path})
            # The server opens the path; keep the fd (hence the path) alive until
            # it says the response is over (bounded: a server that never says so
            # must not pin the descriptor for the connection's whole life).
            try:
                await asyncio.wait_for(_until_disconnect(receive), PATHSEND_HOLD)
            except asyncio.TimeoutError:
                pass
            return
        if handoff.length == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        gone = False

        def on_message(w: "asyncio.Task[Message]") -> None:
            nonlocal gone
            if not w.cancelled() and (w.exception() is not None or w.result().get("type") == "http.disconnect"):
                gone = True

        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(on_message)
        loop = asyncio.get_running_loop()
        offset, remaining = handoff.offset, handoff.length
        pending = loop.run_in_executor(None, os.pread, fd, min(FILE_CHUNK, remaining), offset)
        while True:
            data = await pending
            if not data:
                logger.warning("file response cut: the file shrank by %d bytes", remaining)
                return
            offset += len(data)
            remaining -= len(data)
            if remaining > 0:  # read the next piece while this one goes out
                pending = loop.run_in_executor(None, os.pread, fd, min(FILE_CHUNK, remaining), offset)
            if gone:
                return
            await send({"type": "http.response.body", "body": data, "more_body": remaining > 0})
            if remaining <= 0:
                return
    finally:
        if watcher is not None and not watcher.done():
            watcher.cancel()
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _f: os.close(fd))
        else:
            os.close(fd)
