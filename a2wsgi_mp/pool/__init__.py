"""The front side of the pool: what runs in the ASGI server's process.

:class:`~a2wsgi_mp.pool.app.WSGIPool` (``app``) is the ASGI app; it spools a
request's body (``spool``), takes a slot from the dispatcher
(``dispatch.Dispatcher``), sends the request over the slot's connection
(:mod:`a2wsgi_mp.ipc`) and relays the response events (``exchange``,
``filesend``, ``deadlines``).  The ``supervisor`` keeps the worker processes
(``worker``: their states and connections) whole: one reconcile step starts
them from the zygote (``zygote``, followed by pidfd in ``processes``) and
retires them as the pure ``policies`` (recycling, elastic sizing, back-off)
decide.  ``metrics`` renders the counters.  The worker processes themselves are in :mod:`a2wsgi_mp.workers`.
"""
