"""A raw ASGI app that ignores ``scope["type"]`` (as a2wsgi's own test apps do),
behind ``ASGIMiddleware``: served by a plain WSGI server in the tests.

It reads "the body" until an ``http.request`` without ``more_body`` comes, so
in the lifespan scope it calls ``receive()`` a second time instead of answering
``lifespan.startup``.
"""

from __future__ import annotations

from a2wsgi_mp import ASGIMiddleware


async def echo(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.request":
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


app = ASGIMiddleware(echo)
