"""ASGI entry points over :mod:`tests.apps.django_cookie`, for ``uvicorn MODULE:ATTR``."""

from a2wsgi_mp import WSGIMiddleware, WSGIPool

from .django_cookie import application

APP = "tests.apps.django_cookie:application"

pool = WSGIPool(APP, workers=1, graceful_timeout=5)
pool_raising = WSGIPool(APP, workers=1, graceful_timeout=5, raise_app_errors=True)
middleware = WSGIMiddleware(application)
