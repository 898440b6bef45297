"""The front side of the pool: what runs in the ASGI server's process.

:class:`~a2wsgi_mp.pool.app.WSGIPool` (``app``) is the ASGI app; it spools a
request's body (``spool``), takes a slot from the dispatcher
(``dispatch.Pool``), sends the request over the slot's connection
(:mod:`a2wsgi_mp.ipc`) and relays the response events (``exchange``,
``filesend``, ``deadlines``).  The ``supervisor`` keeps the worker processes
(``handles``) whole: it starts them from the zygote (``spawning``, ``launcher``,
``processes``), retires them (``recycling``), sizes an elastic pool
(``elastic``) and reloads a preloaded one (``preload``).  ``metrics`` renders
the counters.  The worker processes themselves are in :mod:`a2wsgi_mp.workers`.
"""
