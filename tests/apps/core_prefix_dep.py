"""Exists, but imports a missing module whose name is a prefix of this one's."""

import tests.apps.core_prefix  # noqa: F401  (does not exist)

app = None
