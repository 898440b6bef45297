"""a2wsgi_mp: WSGI apps on ASGI servers through a supervised pool of worker processes.

The public names are imported on first use (PEP 562), not with the package:
the pool's child processes import :mod:`a2wsgi_mp.workers` through this
package and must not load the front (``pool/``, asyncio, uvicorn) with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0.dev0"

__all__ = ["ASGIMiddleware", "BootFailed", "RemoteAppError", "WSGIMiddleware", "WSGIPool", "__version__"]

#: public name -> the module that defines it
_HOMES = {
    "ASGIMiddleware": ".asgi",
    "BootFailed": ".errors",
    "RemoteAppError": ".errors",
    "WSGIMiddleware": ".wsgi",
    "WSGIPool": ".pool.app",
}

if TYPE_CHECKING:
    from .asgi import ASGIMiddleware
    from .errors import BootFailed, RemoteAppError
    from .pool.app import WSGIPool
    from .wsgi import WSGIMiddleware


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
