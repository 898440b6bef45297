"""Descriptors a spawned zygote or worker inherits by accident, closed at once.

``posix_spawn`` hands a child every descriptor of its parent that is not
close-on-exec.  Python opens its own with close-on-exec (PEP 446), but a front
also holds descriptors made inheritable on purpose by whoever started *it*:
under ``--fronts N`` uvicorn's process manager passes each front the listening
socket and its health-check pipes.  A zygote that kept them would hold the
listening socket open after its front is gone, and every worker would inherit
it again.  So a fresh zygote or worker closes every inheritable descriptor
above stdio except the ones it was given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def close_inherited(keep: Iterable[int]) -> None:
    """Close every inheritable descriptor above stdio that is not in ``keep``."""
    kept = set(keep)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc (macOS): nothing to enumerate cheaply; leave them
        return
    for fd in fds:
        if fd <= 2 or fd in kept:
            continue
        try:
            if os.get_inheritable(fd):
                os.close(fd)
        except OSError:  # the listdir's own descriptor, closed meanwhile
            pass
