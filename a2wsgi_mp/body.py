"""``wsgi.input`` over ASGI ``receive()``: a request body read lazily, from a
worker thread, for the in-process :class:`~a2wsgi_mp.wsgi.WSGIMiddleware`.

Apart from the middleware because it is the one piece that crosses from the
app's thread to the event loop on every read; a2wsgi users import it as
``a2wsgi_mp.wsgi.Body``, which still works.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Coroutine, Iterator, cast

from .errors import InputDisconnected
from .types import Message, Receive

__all__ = ["DISCONNECT", "Body", "ClientDisconnect", "InputDisconnected"]

#: The first name of :class:`~a2wsgi_mp.errors.InputDisconnected` (``a2wsgi_mp.wsgi`` has it too).
ClientDisconnect = InputDisconnected

#: What a read sees once the client is gone (or the wait was abandoned).
DISCONNECT: Message = {"type": "http.disconnect"}



class Body:
    """``wsgi.input`` that pulls the request body from ASGI ``receive()`` on demand.

    Reads run in the worker thread and hop onto the event loop for each
    message, so a large upload streams through without being buffered first
    (the buffer only holds what the app asked for but has not consumed yet).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive) -> None:
        self.buffer = bytearray()
        self.loop = loop
        self.receive = receive
        self._has_more = True
        self._disconnected = False
        self._future: concurrent.futures.Future[Message] | None = None

    @property
    def has_more(self) -> bool:
        return self._has_more or bool(self.buffer)

    def abandon(self) -> None:
        """Release a read blocked on the loop; later reads raise. Any thread may call it."""
        self._disconnected = True
        future = self._future
        if future is not None:
            future.cancel()

    def _check(self) -> None:
        if self._disconnected:
            self.buffer.clear()  # part of a body that never completed: useless, and misleading
            raise InputDisconnected("the client disconnected before the request body was complete")

    def _receive_more_data(self) -> bytes:
        self._check()
        if not self._has_more:
            return b""
        try:
            # (a server's receive() is a coroutine function; ASGI only promises an awaitable)
            future = asyncio.run_coroutine_threadsafe(cast("Coroutine[Any, Any, Message]", self.receive()), self.loop)
        except RuntimeError as exc:  # the loop is closed: nobody will ever answer
            self._disconnected = True
            raise InputDisconnected("the event loop is gone") from exc
        self._future = future
        if self._disconnected:  # abandon() ran between the check and the assignment
            future.cancel()
        try:
            message = future.result()
        except concurrent.futures.CancelledError:
            message = DISCONNECT
        except Exception as exc:
            self._disconnected = True
            raise InputDisconnected(f"receive() failed: {exc!r}") from exc
        finally:
            self._future = None
        if message.get("type") == "http.disconnect":  # any other message with a body is read, as a2wsgi does
            self._disconnected = True
            self._has_more = False
            self._check()
        self._has_more = bool(message.get("more_body", False))
        return bytes(message.get("body", b""))

    def read(self, size: int | None = -1) -> bytes:
        self._check()
        if size is None or size < 0:
            while self._has_more:
                self.buffer.extend(self._receive_more_data())
            result = bytes(self.buffer)
            self.buffer.clear()
            return result
        while len(self.buffer) < size and self._has_more:
            self.buffer.extend(self._receive_more_data())
        result = bytes(self.buffer[:size])
        del self.buffer[:size]
        return result

    def readline(self, limit: int | None = -1) -> bytes:
        self._check()
        limit = -1 if limit is None else limit
        if limit == 0:
            return b""
        start = 0
        while True:
            end = self.buffer.find(b"\n", start) + 1
            if end == 0 and 0 <= limit <= len(self.buffer):
                end = limit
            elif end and 0 <= limit < end:
                end = limit
            if end or not self._has_more:
                end = end or len(self.buffer)
                result = bytes(self.buffer[:end])
                del self.buffer[:end]
                return result
            start = len(self.buffer)
            self.buffer.extend(self._receive_more_data())

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line
