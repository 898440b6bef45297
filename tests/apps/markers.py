"""Marker files the test apps leave for the tests, written atomically.

A test polls for a marker and reads it as soon as it appears; written in place,
it could be read half-written on a busy machine (an empty or truncated JSON).
So the content goes to a hidden temp name first and is renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_marker(path: "str | os.PathLike[str]", text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
