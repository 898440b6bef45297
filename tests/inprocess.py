"""One HTTP request to an ASGI app in this process: what tests that drive a
``WSGIPool`` without a server need (the scope, a body, the messages it sent)."""

from __future__ import annotations

import asyncio
from typing import Any


async def call(app: Any, path: str = "/pid", headers: list[tuple[bytes, bytes]] | None = None,
               method: str = "GET", body: bytes = b"", timeout: float = 60) -> list[dict]:
    """Run ``app`` for one request; the ASGI messages it sent.  After the body,
    ``receive()`` waits for ever, as for a client that stays."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": headers or [], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()
        return {}

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout)
    return sent
