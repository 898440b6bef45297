"""a2wsgi_mp: WSGI apps on ASGI servers through a supervised pool of worker processes."""

__version__ = "0.1.0"

from .asgi import ASGIMiddleware  # noqa: E402
from .errors import RemoteAppError  # noqa: E402
from .pool.app import WSGIPool  # noqa: E402
from .pool.supervisor import BootFailed  # noqa: E402
from .wsgi import WSGIMiddleware  # noqa: E402

__all__ = ["ASGIMiddleware", "BootFailed", "RemoteAppError", "WSGIMiddleware", "WSGIPool", "__version__"]
