"""A module that fails while being imported (not an ImportError of its own name)."""

raise RuntimeError("core_broken refuses to import")
