"""``wsgi.file_wrapper`` for pool workers: a file leaves the worker by descriptor.

When an app returns ``environ["wsgi.file_wrapper"](f)`` and ``f`` is a regular
file, the worker does not read it: it sends a FILE frame (status, headers,
offset, length) and passes the descriptor (SCM_RIGHTS); the front streams the
file itself (or hands the path to the server's ``http.response.pathsend``)
while the worker takes its next request.  Anything else (a BytesIO, a pipe, a
socket) is iterated in ``blksize`` blocks like ``wsgiref``'s wrapper.
"""

from __future__ import annotations

import os
import stat
from typing import Any
from wsgiref.util import FileWrapper as _WsgirefFileWrapper


class FileWrapper(_WsgirefFileWrapper):
    """PEP 3333's optional file wrapper; its iteration is the fallback."""


def file_span(iterable: Any, remaining: int | None) -> tuple[int, int, int] | None:
    """``(fd, offset, length)`` when ``iterable`` can go out by descriptor, else None.

    ``offset`` is the file's current position (the app may have seeked);
    ``length`` runs to the end of the file, cut to a declared Content-Length
    (``remaining``).  A file shorter than its Content-Length is left to the
    iteration fallback, which cuts the response as PEP 3333 wants.
    """
    if type(iterable) is not FileWrapper:
        return None
    filelike = iterable.filelike
    fileno = getattr(filelike, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        tell = getattr(filelike, "tell", None)
        offset = tell() if tell is not None else os.lseek(fd, 0, os.SEEK_CUR)
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    if not isinstance(fd, int) or not isinstance(offset, int) or offset < 0:
        return None
    length = max(0, st.st_size - offset)
    if remaining is not None:
        if remaining > length:
            return None
        length = remaining
    return fd, offset, length
