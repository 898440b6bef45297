"""The large-app fixture of the memory benchmark (benchmarks/memory.py).

A Django site (admin, auth, sessions, messages, a URLconf and a view that goes
through the middleware stack) whose WSGI module also imports the weight that
big projects accumulate in modules, caches and lookup tables: ~300k small
objects (100k dicts, each with a string and a tuple).  Importing it is what
each worker does without preloading, and what the zygote does once with it.

``$BENCH_APP_VERSION`` names a file whose content is the code version the app
serves (read at import), so a benchmark can ship new code and reload.
"""

from __future__ import annotations

import os
import time

import django
from django.conf import settings

VERSION = "v1"
if os.environ.get("BENCH_APP_VERSION"):
    with open(os.environ["BENCH_APP_VERSION"]) as f:
        VERSION = f.read().strip()

#: The weight: 100k records of 3 objects each, as a big app's tables and caches.
WEIGHT = [{"id": i, "name": f"item-{i:06d}", "tags": (i % 7, i % 11, f"t{i % 13}")} for i in range(100_000)]
INDEX = {record["name"]: record for record in WEIGHT}

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-only-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
        ],
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ],
        TEMPLATES=[{
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {"context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]},
        }],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        STATIC_URL="/static/",
        USE_TZ=True,
    )
    django.setup()

from django.contrib import admin  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def item(request):
    """Look a few records up (touching shared objects' refcounts, as real views do)."""
    n = int(request.GET.get("n", "1"))
    if request.GET.get("sleep"):
        time.sleep(float(request.GET["sleep"]))
    records = [INDEX[f"item-{(n * 7919 + k) % len(WEIGHT):06d}"] for k in range(20)]
    return JsonResponse({"version": VERSION, "pid": os.getpid(), "names": [r["name"] for r in records]})


urlpatterns = [path("admin/", admin.site.urls), path("", item)]

application = get_wsgi_application()
