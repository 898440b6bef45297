"""A WSGIPool served by a plain ASGI server (``uvicorn tests.apps.pool_asgi:app``)."""

from a2wsgi_mp import WSGIPool

app = WSGIPool("tests.apps.core_app:app", workers=1)
