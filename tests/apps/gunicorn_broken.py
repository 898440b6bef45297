"""An app module that cannot be imported: the boot-failure test serves it."""

raise ImportError("gunicorn_broken: this app fails to import on purpose")

application = None  # never reached
