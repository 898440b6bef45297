"""A module whose WSGI app is the conventional ``application`` (bare ``module`` reference)."""


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"bare"]
