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
import re
import socket
import ssl
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .. import __version__, proctitle, topology
from ..headlimits.options import http_protocol
from ..logs import cli_logging_config
from ..pool.app import WSGIPool
from .lifecycle import Lifecycle
from .sdnotify import Notifier
from .settings import OPTIONS, Settings, build_parser, resolve, size

__all__ = ["build_parser", "main", "make_pool"]

#: Exit statuses (docs/cli.md): 2 is argparse's usage error, kept for every configuration error.
EXIT_CONFIG = 2
#: The app could not be loaded (import error, no such attribute, a failing factory): restarting
#: will not help until the code changes.
EXIT_APP = 3
#: Could not listen (address in use, no permission, bad --fd): may pass, worth restarting.
EXIT_BIND = 4
EXIT_STARTUP_FAILURE = EXIT_APP  # the name older callers import
#: uvicorn's status for a failed start-up (its lifespan, its bind).
STARTUP_FAILURE = 3
#: Seconds uvicorn's own graceful wait lasts beyond --graceful-timeout (it should never be reached).
BACKSTOP = 1.0
#: systemd's first passed descriptor (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3
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
    unhooked = topology.fast_path_unhooked(config, settings.fast_path)
    if unhooked:
        logger.warning(unhooked)


def _fail(code: int, message: str) -> NoReturn:
    print(f"a2wsgi-mp: error: {message}", file=sys.stderr)
    sys.exit(code)


def _flags(message: str) -> str:
    """A pool error names its Python field (``workers_min``): name the flag (``--workers-min``)."""
    for option in OPTIONS:
        if option.to == "pool":
            message = re.sub(rf"\b{option.name}\b", option.flag, message)
    return message


def _check_tls(settings: Settings) -> None:
    """Read the TLS files now: a missing or bad one is a configuration error, not a traceback."""
    if not settings.ssl_certfile and not settings.ssl_keyfile:
        return
    if not settings.ssl_certfile:
        _fail(EXIT_CONFIG, "--ssl-keyfile needs --ssl-certfile")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile, settings.ssl_keyfile_password)
        if settings.ssl_ca_certs:
            context.load_verify_locations(settings.ssl_ca_certs)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(f for f in (settings.ssl_certfile, settings.ssl_keyfile, settings.ssl_ca_certs) if f)
        _fail(EXIT_CONFIG, f"TLS: cannot use {files}: {exc}")


def _socket_activation(settings: Settings) -> None:
    """systemd socket activation: serve on the descriptor systemd passed (LISTEN_FDS), unless
    told where to listen.  The variables are for this process only: they are removed."""
    fds, pid = os.environ.pop("LISTEN_FDS", ""), os.environ.pop("LISTEN_PID", "")
    os.environ.pop("LISTEN_FDNAMES", None)
    if not fds.isdigit() or int(fds) < 1 or pid != str(os.getpid()):
        return
    if settings.sources["fd"] == "default" and settings.sources["uds"] == "default":
        settings.values["fd"] = SD_LISTEN_FDS_START
        settings.sources["fd"] = "systemd socket activation (LISTEN_FDS)"
        if int(fds) > 1:
            logger.warning("systemd passed %s sockets: serving on the first (fd %d) only", fds, SD_LISTEN_FDS_START)


def _where(settings: Settings, sock: socket.socket) -> str:
    scheme = "https" if settings.ssl_certfile else "http"
    if sock.family == socket.AF_UNIX:
        return f"{scheme} on unix socket {sock.getsockname() or settings.uds}"
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if sock.family == socket.AF_INET6 else host
    return f"{scheme}://{host}:{port}" + (f" (fd {settings.fd})" if settings.fd is not None else "")


def _listen(config: Any, settings: Settings) -> socket.socket:
    """The listening socket, bound before the pool starts: a failure is exit status 4 (it may
    pass: worth a restart), told apart from an app that cannot load (3)."""
    if settings.fd is not None:
        where = f"--fd {settings.fd}"
        try:
            sock = socket.socket(fileno=settings.fd)
            if sock.type != socket.SOCK_STREAM:
                raise OSError(f"fd {settings.fd} is not a stream socket")
            sock.listen(config.backlog)  # (an activated socket listens already: harmless)
            return sock
        except OSError as exc:
            _fail(EXIT_BIND, f"cannot serve on {where}: {exc}")
    if settings.uds:
        where = f"unix socket {settings.uds}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(settings.uds)
            os.chmod(settings.uds, 0o666)  # (uvicorn's)
        except OSError as exc:
            sock.close()
            _fail(EXIT_BIND, f"cannot listen on {where}: {exc}")
        return sock
    host = settings.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{settings.port}" if family == socket.AF_INET6 else f"{host}:{settings.port}"
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, settings.port))
    except OSError as exc:
        sock.close()
        _fail(EXIT_BIND, f"cannot listen on {where}: {exc}")
    return sock


def _frontserver_class() -> Any:
    import uvicorn

    class FrontServer(uvicorn.Server):
        """uvicorn's server, with signals and start-up told to a :class:`Lifecycle`."""

        lifecycle: Lifecycle

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.lifecycle.handle_exit(sig, frame)

        async def startup(self, sockets: Any = None) -> None:
            if not await self.lifecycle.startup(lambda: super(FrontServer, self).startup(sockets=sockets)):
                return  # (stopped while the app loaded: not started, not failed)
            if self.started:  # (uvicorn says nothing of sockets it was given)
                logger.info("listening on %s (press CTRL+C to quit)", self.lifecycle.where)
                self.lifecycle.started()

    return FrontServer


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
        _fail(EXIT_CONFIG, f"--reload-dir: not a directory: {', '.join(missing)}")
    if settings.fronts < 1:
        _fail(EXIT_CONFIG, "--fronts must be at least 1")
    if settings.shutdown_delay < 0:
        _fail(EXIT_CONFIG, "--shutdown-delay must not be negative")
    try:
        pool = make_pool(settings)
        http = http_protocol(settings)
    except (TypeError, ValueError) as exc:
        _fail(EXIT_CONFIG, _flags(str(exc)))
    _check_tls(settings)
    _socket_activation(settings)
    notifier = Notifier()
    pool.fronts = (settings.fronts, "--fronts" if settings.fronts > 1 else "a2wsgi-mp")
    os.environ[proctitle.PREFIX_ENV] = proctitle.PREFIX  # for the zygote and workers, whatever we inherited
    proctitle.set_role("master" if settings.fronts > 1 else "front", settings.app)
    server_options = settings.target("uvicorn")
    server_options["log_config"] = settings.log_config or cli_logging_config(settings.log_level, settings.access_log,
                                                                             settings.log_format)
    server_options["access_log"] = False  # ours (a2wsgi_mp.access), not uvicorn's
    graceful = pool.config.graceful_timeout
    # uvicorn's own wait is only a backstop: the pool ends what still runs at --graceful-timeout
    # (see lifecycle.py), so uvicorn never has to cancel a request.
    backstop = graceful + BACKSTOP
    if settings.fronts > 1:
        from .fronts import run_fronts

        code = run_fronts(settings, notifier, announce=lambda config: _log_start(settings, config),
                          listen=lambda config: _listen(config, settings), where=lambda sock: _where(settings, sock),
                          lifespan="on", timeout_graceful_shutdown=backstop, **server_options)
        if code:
            sys.exit(code)
        return
    server_options["http"] = http  # uvicorn's own parser, bounded while reading (a2wsgi_mp.headlimits)
    # (uvicorn annotates timeout_graceful_shutdown int; it takes seconds as a float)
    config = uvicorn.Config(pool, lifespan="on", timeout_graceful_shutdown=backstop,  # type: ignore[arg-type]
                            **server_options)
    if settings.log_config is None:
        logging.getLogger("a2wsgi_mp").setLevel(logging.getLogger("uvicorn.error").level)
    _log_start(settings, config)
    sock = _listen(config, settings)
    server = _frontserver_class()(config)
    lifecycle = server.lifecycle = Lifecycle(server, pool, settings.shutdown_delay, notifier)
    lifecycle.where = _where(settings, sock)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        lifecycle.bind(loop)  # SIGHUP: fresh workers that re-import the app, none dropped in between
        watcher, stop = None, asyncio.Event()
        if settings.reload:
            from .reloader import watch

            watcher = loop.create_task(watch(watched, pool, stop))
        try:
            await server.serve(sockets=[sock])
        finally:
            lifecycle.close()
            if watcher is not None:
                stop.set()
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(watcher, 5)

    try:
        _run(config, serve())
    except SystemExit as exc:
        if exc.code == STARTUP_FAILURE:  # uvicorn: the lifespan startup failed: the app did not load
            sys.exit(EXIT_APP)
        raise
    if not server.started and not lifecycle.exiting:
        sys.exit(EXIT_APP)


def _run(config: Any, main: Any) -> None:
    loop_factory = config.get_loop_factory()  # (None: loop="none", asyncio.run as uvicorn does)
    if loop_factory is None:
        asyncio.run(main)
    elif sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main)
    else:  # pragma: no cover - Python 3.10
        loop = loop_factory()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main)
        finally:
            loop.close()
