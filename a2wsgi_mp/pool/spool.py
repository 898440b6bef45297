"""Request-body spool: memory up to a threshold, then an anonymous temp file.

The front reads a whole body before it hands the request to a worker, so a
slow uploader holds only a few bytes of the front's memory, never a worker.
Past ``threshold`` the body goes to a file that has no name at all
(``O_TMPFILE``; elsewhere it is unlinked as soon as it is open), mode 0600:
a crash of any process leaves nothing behind, and the worker gets the file's
descriptor instead of its bytes.

Disk writes run in a thread, one batch in flight while the next one fills, so
neither a slow disk nor dirty-page throttling stalls the event loop.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import IO

#: Bytes gathered in memory before one write to the spool file.
WRITE_BATCH = 1024 * 1024

_executor: ThreadPoolExecutor | None = None


def _writer() -> ThreadPoolExecutor:
    # Created on first spill, not at import, so a process that never spills
    # (and the zygote forked from it) has no extra threads.
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="a2wsgi_mp-spool")
    return _executor


def _write_all(fd: int, chunks: list[bytes]) -> None:
    views = [memoryview(c) for c in chunks]
    while views:
        written = os.writev(fd, views[:1024])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


class BodyTooLarge(Exception):
    """The body exceeds ``max_size``; the client gets 413."""


class Spool:
    """One request body on its way in."""

    __slots__ = ("threshold", "max_size", "directory", "size", "file", "_chunks", "_batch", "_inflight")

    def __init__(self, threshold: int, max_size: int | None = None, directory: str | None = None) -> None:
        self.threshold = threshold
        self.max_size = max_size
        self.directory = directory
        self.size = 0
        self.file: IO[bytes] | None = None
        self._chunks: list[bytes] = []
        self._batch = 0
        self._inflight: asyncio.Future[None] | None = None

    @property
    def spilled(self) -> bool:
        return self.file is not None

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.max_size is not None and self.size > self.max_size:
            raise BodyTooLarge(self.size)
        self._chunks.append(data)
        self._batch += len(data)
        if self.file is None:
            if self.size <= self.threshold:
                return
            self.file = tempfile.TemporaryFile(dir=self.directory)
        if self._batch >= WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        # Wait for the previous batch (its thread ran while we received this
        # one), then start writing this one and return at once.
        if self._inflight is not None:
            await self._inflight
            self._inflight = None
        if self._chunks and self.file is not None:
            chunks, self._chunks, self._batch = self._chunks, [], 0
            loop = asyncio.get_running_loop()
            self._inflight = loop.run_in_executor(_writer(), _write_all, self.file.fileno(), chunks)

    async def finish(self) -> bytes | None:
        """All the body has arrived: its bytes if it stayed in memory, else None
        (then :attr:`file` holds it, written through)."""
        if self.file is None:
            chunks = self._chunks
            self._chunks = []
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        await self._flush()
        await self._flush()  # the last batch
        return None

    def close(self) -> None:
        """Drop the body (a spooled file vanishes with its last descriptor)."""
        self._chunks = []
        if self.file is not None:
            if self._inflight is not None and not self._inflight.done():
                # A writer thread still uses the fd: close once it is done.
                file = self.file
                self._inflight.add_done_callback(lambda _: file.close())
            else:
                self.file.close()
            self.file = None
