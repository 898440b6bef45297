"""A WSGI app that records one span per request (see otel_hooks.py); answers its pid."""

import os

from opentelemetry import trace

tracer = trace.get_tracer(__name__)


def app(environ, start_response):
    with tracer.start_as_current_span("request") as span:
        span.set_attribute("pid", os.getpid())
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
