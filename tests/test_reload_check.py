"""``--reload-check``: a broken Django view never replaces working workers.

Django imports the URLconf and the views on the first request, so a reload
whose view module is broken imports fine and would answer 500 to every request
afterwards.  With ``--reload-check /`` every new worker first answers ``GET /``
from the front; a reload whose workers fail it is given up, in one log line,
and the old workers serve on.  A reload whose new code cannot even be imported
(without ``--preload``: in every new worker) is given up the same way, once,
not retried in a storm of tracebacks.  A real (minimal) Django site, written to
a temp directory so its views can be broken and fixed.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from .serverproc import Server, wait_for

pytest.importorskip("django")

SETTINGS = """\
SECRET_KEY = "reload-check-test"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
ROOT_URLCONF = "warmsite.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
"""
URLS = 'from django.urls import path\n\nfrom . import views\n\nurlpatterns = [path("", views.home)]\n'
VIEWS = ('import os\n\nfrom django.http import HttpResponse\n\n\ndef home(request):\n'
         '    return HttpResponse(f"{VERSION} {os.getpid()}")\n\n\nVERSION = "{version}"\n')
BROKEN_VIEWS = "from django.http import HttpResponse\nimport a2wsgi_mp_no_such_module  # a bad deploy\n"
WSGI = ('import os\n\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "warmsite.settings")\n'
        'from django.core.wsgi import get_wsgi_application\n\napplication = get_wsgi_application()\n')


def _site(root: Path) -> Path:
    site = root / "warmsite"
    site.mkdir()
    for name, text in {"__init__.py": "", "settings.py": SETTINGS, "urls.py": URLS, "wsgi.py": WSGI,
                       "views.py": VIEWS.replace("{version}", "v1")}.items():
        (site / name).write_text(text)
    return site


def _served(srv: Server, n: int = 6) -> list[tuple[int, str]]:
    out = []
    for _ in range(n):
        r = httpx.get(srv.url + "/", timeout=10)
        out.append((r.status_code, r.text.split()[0] if r.status_code == 200 else r.text[:40]))
    return out


def _pids(srv: Server) -> set[int]:
    return {int(httpx.get(srv.url + "/", timeout=10).text.split()[1]) for _ in range(6)}


@pytest.mark.parametrize("preload", [False, True], ids=["import-per-worker", "preload"])
def test_a_broken_view_is_caught_by_the_reload_check_and_the_old_workers_serve_on(tmp_path, preload):
    site = _site(tmp_path)
    options = ["--workers", "2", "--app-dir", str(tmp_path), "--reload-check", "/", "--no-access-log"]
    srv = Server.cli("warmsite.wsgi:application", *options, *(["--preload"] if preload else []),
                     env={"PYTHONDONTWRITEBYTECODE": "1"}, ready_path="/")
    with srv:
        assert _served(srv) == [(200, "v1")] * 6
        old = _pids(srv)
        # A bad deploy: the views module no longer imports; nothing imports it until a request.
        (site / "views.py").write_text(BROKEN_VIEWS)
        srv.signal(signal.SIGHUP)
        assert wait_for(lambda: "reload failed" in srv.log(), 20), srv.log()
        assert _served(srv) == [(200, "v1")] * 6  # not one 500
        assert _pids(srv) == old
        failed = [ln for ln in srv.log().splitlines() if "reload failed" in ln]
        assert re.search(r"reload failed: worker \d+ (?:\(pid \d+\) )?"
                         r'failed the reload check: "GET /" answered 500 in \d+ ms; '
                         r"the old workers keep serving \(2 ready\)", failed[0]), srv.log()
        assert "No module named 'a2wsgi_mp_no_such_module'" in srv.log()  # the view's error, logged
        # The fix: the next reload goes through.
        (site / "views.py").write_text(VIEWS.replace("{version}", "v2"))
        srv.signal(signal.SIGHUP)
        assert wait_for(lambda: "reload complete" in srv.log(), 20), srv.log()
        assert wait_for(lambda: _served(srv, 4) == [(200, "v2")] * 4, 10)
        assert not _pids(srv) & old


def test_new_code_that_cannot_be_imported_fails_the_reload_once(tmp_path):
    site = _site(tmp_path)
    srv = Server.cli("warmsite.wsgi:application", "--workers", "2", "--app-dir", str(tmp_path),
                     "--no-access-log", env={"PYTHONDONTWRITEBYTECODE": "1"}, ready_path="/")
    with srv:
        assert _served(srv, 2) == [(200, "v1")] * 2
        (site / "settings.py").write_text(SETTINGS + "raise RuntimeError('a bad setting')\n")
        srv.signal(signal.SIGHUP)
        assert wait_for(lambda: "reload failed" in srv.log(), 20), srv.log()
        assert _served(srv) == [(200, "v1")] * 6
        # An absence can only be watched for: a second without a retry (the old code's back-off,
        # 0.1 s doubling, retried 4 times, with 4 tracebacks, in that second).
        time.sleep(1.0)
        log = srv.log()
        assert log.count("reload failed:") == 1, log  # (its other new worker: "retired (reload failed)")
        assert log.count("RuntimeError: a bad setting") == 1, log
        assert re.search(r"reload failed: worker \d+ (?:\(pid \d+\) )?"
                         r"could not load warmsite.wsgi:application; the old workers "
                         r"keep serving \(2 ready\); fix the code and reload again:\n", log), log
