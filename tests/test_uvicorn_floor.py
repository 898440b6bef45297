"""The oldest uvicorn a2wsgi_mp supports (pyproject's ``uvicorn>=``) and what it uses of it.

a2wsgi_mp subclasses uvicorn's protocols and supervisor, so it depends on parts of
uvicorn that are not public.  CI runs this file, with the end-to-end tests of those
parts, on the floor itself too (.ci/run); why the floor is where it is: README,
"Requirements".
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import uvicorn

from a2wsgi_mp.cli import _log_start
from a2wsgi_mp.cli.settings import resolve

from .serverproc import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def floor() -> str:
    dependencies = tomllib.loads(Path(REPO, "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if re.match(r"uvicorn\s*>=", d)]
    return pin.split(">=")[1].strip()


def test_the_installed_uvicorn_is_at_least_the_floor() -> None:
    assert _version(uvicorn.__version__) >= _version(floor()), (uvicorn.__version__, floor())


def test_the_installed_uvicorn_has_what_a2wsgi_mp_hooks() -> None:
    from uvicorn.config import STARTUP_FAILURE  # noqa: F401  (--fronts: a front that cannot load the app, 0.50)
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle  # noqa: F401  (the direct stream)
    from uvicorn.supervisors import Multiprocess

    from a2wsgi_mp.headlimits.httptools_proto import LimitedHttpToolsProtocol

    assert LimitedHttpToolsProtocol.fast_path_hook  # the fast path's way in (0.45)
    assert hasattr(Multiprocess, "handle_hup")  # --fronts passes SIGHUP on


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_fast_path_without_its_hook_is_said_at_start_up(fast_path: bool, caplog: pytest.LogCaptureFixture) -> None:
    """On a uvicorn without the hook every request would quietly take the ASGI path."""
    settings = resolve(["tests.apps.core_app:app", "--fast-path" if fast_path else "--no-fast-path"])
    protocol = type("OldHttpToolsProtocol", (), {"parser": "httptools", "fast_path_hook": False})
    with caplog.at_level(logging.INFO, logger="a2wsgi_mp"):
        _log_start(settings, SimpleNamespace(http=protocol, loop="uvloop"))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if fast_path:
        assert len(warned) == 1 and "the fast path is off" in warned[0] and uvicorn.__version__ in warned[0], warned
    else:
        assert not warned


def test_only_the_httptools_protocol_has_a_hook_to_miss() -> None:
    from a2wsgi_mp import topology
    from a2wsgi_mp.headlimits.h11_proto import LimitedH11Protocol
    from a2wsgi_mp.headlimits.httptools_proto import LimitedHttpToolsProtocol

    assert topology.fast_path_unhooked(SimpleNamespace(http=LimitedHttpToolsProtocol), True) is None
    assert topology.fast_path_unhooked(SimpleNamespace(http=LimitedH11Protocol), True) is None  # (no fast path)
    assert topology.fast_path_unhooked(SimpleNamespace(http="auto"), True) is None  # (plain uvicorn: none either)
