"""Loads only while the file named by $SUP_FLAG exists: a deploy gone wrong."""

import os

if not os.path.exists(os.environ["SUP_FLAG"]):
    raise RuntimeError("configuration missing: the flag file is gone")

from .sup_faults import app  # noqa: E402,F401
