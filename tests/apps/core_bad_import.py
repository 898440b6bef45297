"""A module that exists but whose own import of a missing dependency fails."""

import core_dependency_that_does_not_exist  # noqa: F401

app = None
