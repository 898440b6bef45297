"""A minimal Django site (settings in this module) whose pages set a CSRF cookie.

Django's WSGI handler emits ``Set-Cookie`` values with a leading space
(``cookie.output(header="")``), which h11 refuses unless the space is stripped:
the page behind issue 10.  ``application`` also routes a few raw WSGI paths
that misbehave on purpose (an invalid header, an exception).
"""

from __future__ import annotations

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="issue-10-" + "x" * 50,
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.middleware.csrf import get_token  # noqa: E402
from django.urls import path  # noqa: E402


def form(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":  # reached only when the CSRF cookie made the round trip
        return HttpResponse(f"posted {request.POST.get('name', '')}")
    return HttpResponse(f'<form method="post"><input name="csrfmiddlewaretoken" value="{get_token(request)}"></form>')


urlpatterns = [path("form", form)]
django_app = get_wsgi_application()


def application(environ, start_response):
    route = environ["PATH_INFO"]
    if route == "/bad-header":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Bad", "a\x01b")])
        return [b"never sent"]
    if route == "/raw-boom":
        raise LookupError("raw WSGI app failed")
    if route == "/raw-cut":
        return _cut(start_response)
    if route == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]
    return django_app(environ, start_response)


def _cut(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"partial"
    raise LookupError("failed mid-stream")
