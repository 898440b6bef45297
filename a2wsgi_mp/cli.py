"""``a2wsgi-mp APP``: serve a WSGI app on uvicorn through a supervised pool."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import fields
from typing import Any, Sequence

from . import __version__
from .config import PoolConfig
from .front import WSGIPool
from .launcher import START_METHODS

EXIT_STARTUP_FAILURE = 3


def _size(text: str) -> int:
    """``1048576``, ``512K``, ``1M``, ``2G`` -> bytes."""
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        return int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="a2wsgi-mp",
        description="Serve a WSGI app from uvicorn through a supervised pool of worker processes.",
    )
    p.add_argument("app", help="the WSGI app as 'package.module:app' (or 'module:factory()')")
    server = p.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    server.add_argument("--port", type=int, default=8000, help="bind port (default: %(default)s)")
    server.add_argument("--uds", help="bind to this Unix domain socket instead")
    server.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug", "trace"])
    server.add_argument("--no-access-log", action="store_true", help="disable uvicorn's access log")
    server.add_argument("--fronts", type=int, default=1,
                        help="front processes on the listening socket, each with its share of --workers "
                             "(default: %(default)s); see a2wsgi_mp.fronts")
    server.add_argument("--version", action="version", version=f"a2wsgi-mp {__version__}")

    # Pool options: only those given reach PoolConfig, whose defaults are the
    # single source of truth (shown in the help).
    pool = p.add_argument_group("pool")
    defaults = {f.name: f.default for f in fields(PoolConfig)}

    def option(flag: str, kind: Any, text: str, **extra: Any) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        default = defaults[dest]
        shown = "" if default in (None, "", 0) else f" (default: {default})"
        pool.add_argument(flag, type=kind, dest=dest, default=argparse.SUPPRESS, help=text + shown, **extra)

    option("--workers", int, "worker processes (default: one per CPU)")
    option("--threads", int, "threads per worker process")
    option("--start-method", str, "fork (workers forked from a clean zygote; default on Linux) or spawn",
           choices=START_METHODS)
    option("--timeout", float, "hard per-request timeout in seconds: 504 and the worker replaced; 0 = off")
    option("--graceful-timeout", float, "seconds in-flight requests get on shutdown")
    option("--max-requests", int, "recycle a worker after N requests; 0 = never")
    option("--max-requests-jitter", int, "add up to N to --max-requests, per worker")
    option("--max-rss", int, "recycle a worker above N MiB of RSS, between requests; 0 = off")
    option("--max-lifetime", float, "recycle a worker older than N seconds, between requests; 0 = off")
    option("--backlog", int, "requests that may wait for a worker before 503")
    option("--queue-timeout", float, "503 for a request that waited N seconds for a worker; 0 = off")
    option("--spool-threshold", _size, "request bodies larger than this (bytes, or 512K, 1M…) go to a temp file")
    option("--max-body-size", _size, "413 for larger request bodies (default: no limit)")
    option("--response-buffer", _size, "bytes of a response the front holds for a slow client so the worker is "
           "free at once (0 = the worker waits)")
    option("--spool-dir", str, "directory for spooled request bodies (default: the system temp dir)")
    option("--metrics-path", str, "serve Prometheus metrics at this path (default: off)")
    option("--ipc", str, "bodies via the socketpair (pipe) or a shared-memory ring per slot (shm)",
           choices=["pipe", "shm"])
    return p


def make_pool(args: argparse.Namespace) -> WSGIPool:
    names = {f.name for f in fields(PoolConfig)}
    return WSGIPool(args.app, **{k: v for k, v in vars(args).items() if k in names})


def _setup_logging(level: int) -> None:
    """Our records beside uvicorn's, in the same style."""
    log = logging.getLogger("a2wsgi_mp")
    log.setLevel(level)
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-9s [%(name)s] %(message)s"))
        log.addHandler(handler)
        log.propagate = False


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    args = build_parser().parse_args(argv)
    graceful = getattr(args, "graceful_timeout", PoolConfig.graceful_timeout)
    try:
        pool = make_pool(args)
    except (TypeError, ValueError) as exc:
        print(f"a2wsgi-mp: error: {exc}", file=sys.stderr)
        sys.exit(2)
    server_options = dict(host=args.host, port=args.port, uds=args.uds, lifespan="on", log_level=args.log_level,
                          access_log=not args.no_access_log, timeout_graceful_shutdown=graceful or None)
    level = logging.getLevelName(args.log_level.upper()) if args.log_level != "trace" else 5
    if args.fronts > 1:
        from .fronts import run_fronts

        _setup_logging(level)
        names = {f.name for f in fields(PoolConfig)}
        options = {k: v for k, v in vars(args).items() if k in names}
        if not run_fronts(args.app, options, args.fronts, level, **server_options):
            sys.exit(EXIT_STARTUP_FAILURE)
        return
    config = uvicorn.Config(pool, **server_options)
    _setup_logging(level)
    server = uvicorn.Server(config)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        # SIGHUP: fresh workers that re-import the app, none dropped in between.
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(pool.reload()))
        await server.serve()

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
