"""A stock Django 5.2 site (admin, auth, sessions, CSRF, sqlite) for the compatibility matrix.

``COMPAT_DJANGO_DIR`` is a temp dir holding the sqlite database and the
served file; :func:`prepare` creates it, migrates and adds a superuser.
"""
