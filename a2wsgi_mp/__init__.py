"""a2wsgi_mp: WSGI apps on ASGI servers through a supervised pool of worker processes."""

__version__ = "0.1.0"
