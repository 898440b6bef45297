"""The Django site of the real-page scenarios (R1, R2): a stock ``startproject`` site.

Settings as ``django-admin startproject`` writes them (the default apps and
middleware: security, sessions, common, CSRF, auth, messages, clickjacking),
``DEBUG = False``, a sqlite file database, persistent connections off (the
default).  Pages:

* ``/admin/login/`` — Django's own admin login page: template rendering with
  inheritance and i18n, a CSRF token and cookie, the session and auth
  middleware looking for a user (R1);
* ``/users/`` — a JSON view running one ORM query on sqlite (20 rows of
  ``auth_user``), through the whole middleware stack (R2);
* ``/hello`` — a plain response, only for the benchmark's readiness check.

The database lives in ``$BENCH_TMPDIR`` (the run's temp dir) and is created
on first import, under a file lock, by whichever process gets there first:
``migrate`` plus 50 users.
"""

from __future__ import annotations

import fcntl
import os
import tempfile

import django
from django.conf import settings

DB = os.path.join(os.environ.get("BENCH_TMPDIR") or tempfile.gettempdir(),
                  f"a2wsgi_mp-bench-django-{os.getuid()}.sqlite3")
USERS = 50

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
            "DIRS": [],
            "APP_DIRS": True,
            "OPTIONS": {"context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]},
        }],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB}},
        LANGUAGE_CODE="en-us",
        TIME_ZONE="UTC",
        USE_I18N=True,
        USE_TZ=True,
        STATIC_URL="static/",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def _prepare_db() -> None:
    """Migrate and fill the database once per run, whichever process imports first."""
    ready = DB + ".ready"
    if os.path.exists(ready):
        return
    with open(DB + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(ready):
            return
        from django.contrib.auth.models import User
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0, interactive=False)
        User.objects.bulk_create([User(username=f"user{i:03d}", email=f"user{i:03d}@example.com",
                                       first_name="User", last_name=f"Number {i}", password="!")
                                  for i in range(USERS)])
        connections.close_all()
        open(ready, "w").close()


_prepare_db()

from django.contrib import admin  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def users(request):
    """One ORM query, 20 rows, as JSON."""
    rows = list(User.objects.order_by("id").values("id", "username", "email", "first_name", "last_name",
                                                   "date_joined", "is_active")[:20])
    return JsonResponse({"count": len(rows), "users": rows})


def hello(request):
    return HttpResponse(b"Hello, world!", content_type="text/plain")


urlpatterns = [path("admin/", admin.site.urls), path("users/", users), path("hello", hello)]

application = get_wsgi_application()
