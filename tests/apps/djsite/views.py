"""Views exercising the paths a real site takes: CSRF, sessions, uploads, files, streams, errors."""

import hashlib

from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.utils.html import escape

from .settings import DATA_DIR

FILE_NAME = "served.bin"


def form(request):
    """GET: a form carrying the CSRF token (and the csrftoken cookie); POST: echo the field."""
    if request.method == "POST":
        return JsonResponse({"name": request.POST.get("name", "")})
    token = escape(get_token(request))
    return HttpResponse(
        '<form method="post" enctype="multipart/form-data">'
        f'<input type="hidden" name="csrfmiddlewaretoken" value="{token}">'
        '<input name="name"><input type="file" name="file"></form>'
    )


def counter(request):
    request.session["count"] = request.session.get("count", 0) + 1
    return JsonResponse({"count": request.session["count"]})


def upload(request):
    """Multipart upload (CSRF-protected): the file's size and sha256."""
    f = request.FILES["file"]
    digest = hashlib.sha256()
    for chunk in f.chunks():
        digest.update(chunk)
    return JsonResponse({"name": f.name, "size": f.size, "sha256": digest.hexdigest(),
                         "field": request.POST.get("name", "")})


def file(request):
    return FileResponse(open(DATA_DIR / FILE_NAME, "rb"), as_attachment=True, filename=FILE_NAME)


def stream(request):
    def chunks():
        for i in range(100):
            yield f"line {i}\n".encode()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def boom(request):
    raise RuntimeError("compat-matrix: django view failed")
