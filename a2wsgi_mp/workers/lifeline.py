"""A worker's lifeline to the front: it dies when the front does, whoever its parent is.

The front follows its workers by pidfd (:mod:`a2wsgi_mp.pool.processes`); this is
the other direction.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from typing import NoReturn


def watch_front(front_fd: int) -> None:
    """Die (SIGKILL) when the front exits, whoever our parent is.

    A worker must not die with the zygote (``PR_SET_PDEATHSIG`` is relative to
    the parent), so it watches a pidfd of the front instead: a daemon thread
    blocked in ``poll``, costing nothing until the front goes.  It needs the
    GIL for a moment to act, so a worker wedged in C code that never releases
    the GIL outlives the front until that code returns; idle workers also end
    on EOF of their connections.
    """
    poller = select.poll()
    poller.register(front_fd, select.POLLIN)
    if poller.poll(0):  # the front died before we got here
        _die()

    def wait() -> NoReturn:
        while not poller.poll():
            pass
        _die()

    threading.Thread(target=wait, name="a2wsgi-mp-front-watch", daemon=True).start()


def _die() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)  # (not reached)
