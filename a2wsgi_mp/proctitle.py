"""Process titles, gunicorn style: ``a2wsgi-mp: worker 3 [mysite.wsgi:application]``.

Every role gets one (front, zygote, worker with its number), so ``ps`` and
``top`` tell them apart without walking parent pids.  setproctitle is a
dependency; where it cannot be imported, titles are silently left alone.
"""

from __future__ import annotations

import os
from typing import Callable

_setproctitle: Callable[[str], None] | None
try:
    from setproctitle import setproctitle as _setproctitle
except Exception:  # pragma: no cover - a platform without the extension
    _setproctitle = None

PREFIX = "a2wsgi-mp: "
#: Set by a host with its own naming (the gunicorn worker: ``"gunicorn: pool "``);
#: inherited by the zygote and the workers.
PREFIX_ENV = "_A2WSGI_MP_TITLE_PREFIX"
#: Carries a spawned worker's title across exec (a forked one is titled directly).
TITLE_ENV = "_A2WSGI_MP_TITLE"


def title(role: str, app: object) -> str:
    return f"{os.environ.get(PREFIX_ENV, PREFIX)}{role} [{app}]"


def set_title(text: str) -> None:
    if _setproctitle is not None:
        try:
            _setproctitle(text)
        except Exception:  # pragma: no cover - best effort, never fatal
            pass


def set_role(role: str, app: object) -> None:
    set_title(title(role, app))


def take_inherited() -> None:
    """In a spawned process: apply the title its parent chose, and do not pass it on."""
    text = os.environ.pop(TITLE_ENV, None)
    if text:
        set_title(text)
