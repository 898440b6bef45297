"""Stands in for a missing httptools (an install without it, or a platform it does not build on).

Put ``tests/shims/no_httptools`` first on ``PYTHONPATH``: ``import httptools``
fails, so uvicorn's ``--http auto`` picks h11.  With
``COMPAT_SHIM_MARKS`` set, the refusal leaves a file naming the process, so a
test can tell that the shim, not luck, decided the parser.
"""

import os

_marks = os.environ.get("COMPAT_SHIM_MARKS")
if _marks:
    with open(os.path.join(_marks, f"httptools-refused.{os.getpid()}"), "w"):
        pass
raise ImportError("httptools is hidden by tests/shims/no_httptools")
