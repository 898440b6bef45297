"""The ASGI and WSGI type aliases, defined once for the whole package.

Plain mappings and callables, as the specs describe them (ASGI 3.0, PEP 3333),
not TypedDicts: an entry point passes on whatever keys the server or the app
put in a scope, message or environ.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, MutableMapping

__all__ = ["ASGIApp", "Environ", "Message", "Receive", "Scope", "Send", "StartResponse", "WSGIApp"]

#: An ASGI connection scope.
Scope = MutableMapping[str, Any]
#: An ASGI event, received or sent.
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: A WSGI environ (PEP 3333).
Environ = MutableMapping[str, Any]
#: A WSGI ``start_response`` callable.
StartResponse = Callable[..., Any]
#: A WSGI application.
WSGIApp = Callable[..., Iterable[bytes]]
