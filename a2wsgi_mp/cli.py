"""``a2wsgi-mp APP``: serve a WSGI app on uvicorn through a supervised pool."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
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
    d = PoolConfig.__dataclass_fields__
    p = argparse.ArgumentParser(
        prog="a2wsgi-mp",
        description="Serve a WSGI app from uvicorn through a supervised pool of worker processes.",
    )
    p.add_argument("app", help="the WSGI app as 'package.module:app' (or 'module:factory()')")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="bind port (default: %(default)s)")
    p.add_argument("--uds", help="bind to this Unix domain socket instead")
    p.add_argument("--workers", "-w", type=int, default=0, help="worker processes (default: one per CPU)")
    p.add_argument("--threads", type=int, default=1, help="threads per worker process (default: 1)")
    p.add_argument("--start-method", choices=START_METHODS, default=None,
                   help="how workers start: fork (from a clean zygote) or spawn (default: fork on Linux)")
    p.add_argument("--timeout", type=float, default=d["timeout"].default,
                   help="hard per-request timeout in seconds, 504 and the worker replaced; 0 = off (default: %(default)s)")
    p.add_argument("--graceful-timeout", type=float, default=d["graceful_timeout"].default,
                   help="seconds in-flight requests get on shutdown (default: %(default)s)")
    p.add_argument("--max-requests", type=int, default=0, help="recycle a worker after N requests (0 = never)")
    p.add_argument("--max-requests-jitter", type=int, default=0, help="add up to N to --max-requests per worker")
    p.add_argument("--max-rss", type=int, default=0, help="recycle a worker above N MiB of RSS (0 = off)")
    p.add_argument("--max-lifetime", type=float, default=0, help="recycle a worker older than N seconds (0 = off)")
    p.add_argument("--backlog", type=int, default=d["backlog"].default,
                   help="requests that may wait for a worker before 503 (default: %(default)s)")
    p.add_argument("--queue-timeout", type=float, default=0, help="503 for requests that waited N seconds (0 = off)")
    p.add_argument("--spool-threshold", type=_size, default=d["spool_threshold"].default,
                   help="request bodies larger than this go to a temp file (default: 1M)")
    p.add_argument("--max-body-size", type=_size, default=None, help="413 for larger request bodies (default: no limit)")
    p.add_argument("--metrics-path", default=None, help="serve Prometheus metrics at this path (default: off)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug", "trace"])
    p.add_argument("--no-access-log", action="store_true", help="disable uvicorn's access log")
    p.add_argument("--version", action="version", version=f"a2wsgi-mp {__version__}")
    return p


def make_pool(args: argparse.Namespace) -> WSGIPool:
    options: dict[str, Any] = dict(
        workers=args.workers,
        threads=args.threads,
        timeout=args.timeout,
        graceful_timeout=args.graceful_timeout,
        max_requests=args.max_requests,
        max_requests_jitter=args.max_requests_jitter,
        max_rss=args.max_rss,
        max_lifetime=args.max_lifetime,
        backlog=args.backlog,
        queue_timeout=args.queue_timeout,
        spool_threshold=args.spool_threshold,
        max_body_size=args.max_body_size,
        metrics_path=args.metrics_path,
    )
    if args.start_method:
        options["start_method"] = args.start_method
    return WSGIPool(args.app, **options)


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
    try:
        pool = make_pool(args)
    except (TypeError, ValueError) as exc:
        print(f"a2wsgi-mp: error: {exc}", file=sys.stderr)
        sys.exit(2)
    config = uvicorn.Config(
        pool,
        host=args.host,
        port=args.port,
        uds=args.uds,
        lifespan="on",
        log_level=args.log_level,
        access_log=not args.no_access_log,
        timeout_graceful_shutdown=args.graceful_timeout or None,
    )
    _setup_logging(logging.getLevelName(args.log_level.upper()) if args.log_level != "trace" else 5)
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
