"""Drive an ASGI app's lifespan protocol from a server that has none (a WSGI server).

Like uvicorn's ``--lifespan auto|on``: an app that raises on the ``lifespan``
scope before completing startup is taken not to support it, unless support is
required.  ``state`` is the dict later copied into every request's scope.

The probe must not run an app's request path to its end: a one-shot app (a
bare Starlette ``StreamingResponse``: its body iterator can be consumed once)
or one without a scope check would spend its body, run its background task or
wait forever for ``http.disconnect``.  So, as in uvicorn, a message that is not
a lifespan message makes ``send`` raise, and settles the probe: unsupported.

A lifespan-aware app answers ``lifespan.startup`` before it asks for the next
message (``lifespan.shutdown``).  An app that calls ``receive()`` again first
read the startup message as something else (a raw app that ignores
``scope["type"]`` and reads "the body" until an ``http.request`` comes, a
disconnect listener): that too means unsupported, and that second call raises
``CancelledError`` (once the probe has its verdict) so the task it belongs to
ends quietly instead of waiting for a message that never comes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .errors import LifespanFailure
from .types import ASGIApp, Message

logger = logging.getLogger("a2wsgi_mp.asgi")

_SEND_TYPES = frozenset(
    {"lifespan.startup.complete", "lifespan.startup.failed", "lifespan.shutdown.complete", "lifespan.shutdown.failed"}
)


class Lifespan:
    """Runs ``app``'s lifespan protocol on the loop (like uvicorn's ``--lifespan``)."""

    def __init__(self, app: ASGIApp, state: dict[str, Any], required: bool) -> None:
        self.app = app
        self.state = state
        self.required = required
        self.supported = False
        self._received = 0

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.started: asyncio.Future[str | None] = loop.create_future()
        self.stopped: asyncio.Future[str | None] = loop.create_future()
        self.refused: asyncio.Future[str] = loop.create_future()  # the app showed it has no lifespan
        self.probed = asyncio.Event()
        self.task = loop.create_task(self._main())
        self.inbox.put_nowait({"type": "lifespan.startup"})
        try:
            verdicts: set[asyncio.Future[Any]] = {self.started, self.task, self.refused}
            await asyncio.wait(verdicts, return_when=asyncio.FIRST_COMPLETED)
            self.supported = self.started.done() and self.started.result() is None
        finally:
            self.probed.set()
        if not self.started.done():
            if self.required:
                raise LifespanFailure("the app does not support the lifespan protocol")
            reason = self.refused.result() if self.refused.done() else "it ended without answering"
            logger.debug("the ASGI app does not support lifespan (%s); going on without it", reason)
            return
        if self.started.result() is not None:
            raise LifespanFailure(f"lifespan startup failed: {self.started.result()}")

    async def shutdown(self) -> None:
        if not self.supported or self.task.done():
            return
        self.inbox.put_nowait({"type": "lifespan.shutdown"})
        shutdown: set[asyncio.Future[Any]] = {self.stopped, self.task}
        await asyncio.wait(shutdown, return_when=asyncio.FIRST_COMPLETED)
        if self.stopped.done() and self.stopped.result() is not None:
            logger.error("lifespan shutdown failed: %s", self.stopped.result())

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if self.supported or self.required or self.started.done():
                logger.error("Exception in ASGI lifespan", exc_info=exc)
            else:
                logger.debug("lifespan not supported by the app (%r)", exc)

    async def _receive(self) -> Message:
        self._received += 1
        if self._received > 1 and not self.started.done():
            self._refuse("receive() called again before lifespan.startup was answered")
            await self.probed.wait()  # (a concurrent send() of the app's may fail first: its error comes first)
            raise asyncio.CancelledError()  # ends the task (or stray listener) quietly
        return await self.inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind not in _SEND_TYPES:
            if not self.started.done():
                self._refuse(f"it sent {kind!r}")
            raise RuntimeError(f"unexpected ASGI message {kind!r} in the lifespan scope")
        done = self.started if kind.startswith("lifespan.startup.") else self.stopped
        if not done.done():
            done.set_result(message.get("message", "") if kind.endswith(".failed") else None)

    def _refuse(self, reason: str) -> None:
        if not self.refused.done():
            self.refused.set_result(reason)
