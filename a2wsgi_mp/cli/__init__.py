"""``a2wsgi-mp APP``: serve a WSGI app on uvicorn through a supervised pool.

The options, their environment variables and config-file keys are declared in
:mod:`a2wsgi_mp.cli.settings`; this module turns the resolved settings into a
:class:`~a2wsgi_mp.pool.app.WSGIPool` and a :class:`uvicorn.Config`, and runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Sequence

from .. import __version__, proctitle, topology
from ..headlimits.options import http_protocol
from ..logs import cli_logging_config
from ..pool.app import WSGIPool
from .settings import Settings, build_parser, resolve, size

__all__ = ["build_parser", "main", "make_pool"]

EXIT_STARTUP_FAILURE = 3
_size = size  # the name older callers import

logger = logging.getLogger("a2wsgi_mp")
_SECRET = {"ssl_keyfile_password"}


def make_pool(settings: Settings) -> WSGIPool:
    return WSGIPool(settings.app, **settings.pool_options())


def _use_app_dir(app_dir: str) -> None:
    """Import the app from ``app_dir``: first on this process's path and, through
    PYTHONPATH, on the path of the zygote and workers, which are fresh interpreters."""
    path = os.path.abspath(app_dir)
    sys.path.insert(0, path)
    inherited = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = path + (os.pathsep + inherited if inherited else "")


def _log_start(settings: Settings, config: object) -> None:
    stack = topology.server_stack(config)
    tls = "on" if settings.ssl_certfile else "off"
    proxy = (f"X-Forwarded-For/-Proto trusted from {settings.forwarded_allow_ips}" if settings.proxy_headers
             else "proxy headers ignored")
    logger.info("a2wsgi-mp %s serving %s: %s, TLS %s, %s", __version__, settings.app, stack, tls, proxy)
    by_source: dict[str, list[str]] = {}
    for name, source in settings.sources.items():
        if source != "default":
            value = "***" if name in _SECRET else settings.values[name]
            by_source.setdefault(source, []).append(f"{name}={value}")
    for source, items in by_source.items():
        logger.info("settings from %s: %s", source, ", ".join(items))
    if "h11" in stack or "asyncio" in stack:
        logger.info("the fast path is httptools + uvloop (the default install on CPython/Linux)")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["status"]:  # a2wsgi-mp status: read a running server's admin socket
        from .status import main as status

        sys.exit(status(args[1:]))
    import uvicorn

    settings = resolve(argv)
    for warning in settings.warnings:
        print(f"a2wsgi-mp: warning: {warning}", file=sys.stderr)
    _use_app_dir(settings.app_dir)
    watched = settings.reload_dirs or [settings.app_dir]
    missing = [d for d in watched if not os.path.isdir(d)]
    if settings.reload and missing:
        print(f"a2wsgi-mp: error: --reload-dir: not a directory: {', '.join(missing)}", file=sys.stderr)
        sys.exit(2)
    try:
        pool = make_pool(settings)
        http = http_protocol(settings)
    except (TypeError, ValueError) as exc:
        print(f"a2wsgi-mp: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if settings.fronts < 1:
        print("a2wsgi-mp: error: --fronts must be at least 1", file=sys.stderr)
        sys.exit(2)
    pool.fronts = (settings.fronts, "--fronts" if settings.fronts > 1 else "a2wsgi-mp")
    os.environ[proctitle.PREFIX_ENV] = proctitle.PREFIX  # for the zygote and workers, whatever we inherited
    proctitle.set_role("front", settings.app)
    server_options = settings.target("uvicorn")
    server_options["log_config"] = settings.log_config or cli_logging_config(settings.log_level, settings.access_log,
                                                                             settings.log_format)
    server_options["access_log"] = False  # ours (a2wsgi_mp.access), not uvicorn's
    graceful = pool.config.graceful_timeout
    if settings.fronts > 1:
        from .fronts import run_fronts

        if not run_fronts(settings, lifespan="on", timeout_graceful_shutdown=graceful or None, **server_options):
            sys.exit(EXIT_STARTUP_FAILURE)
        return
    server_options["http"] = http  # uvicorn's own parser, bounded while reading (a2wsgi_mp.headlimits)
    # (uvicorn annotates timeout_graceful_shutdown int; it takes seconds as a float)
    config = uvicorn.Config(pool, lifespan="on", timeout_graceful_shutdown=graceful or None,  # type: ignore[arg-type]
                            **server_options)
    if settings.log_config is None:
        logging.getLogger("a2wsgi_mp").setLevel(logging.getLogger("uvicorn.error").level)
    _log_start(settings, config)
    server = uvicorn.Server(config)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        # SIGHUP: fresh workers that re-import the app, none dropped in between.
        loop.add_signal_handler(signal.SIGHUP, lambda: pool.dispatcher.background(pool.reload()))
        watcher, stop = None, asyncio.Event()
        if settings.reload:
            from .reloader import watch

            watcher = loop.create_task(watch(watched, pool, stop))
        try:
            await server.serve()
        finally:
            if watcher is not None:
                stop.set()
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(watcher, 5)

    loop_factory = config.get_loop_factory() if hasattr(config, "get_loop_factory") else None
    if loop_factory is None:
        asyncio.run(serve())
    elif sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve())
    else:  # pragma: no cover - Python 3.10
        loop = loop_factory()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
        finally:
            loop.close()
    if not server.started:
        sys.exit(EXIT_STARTUP_FAILURE)
