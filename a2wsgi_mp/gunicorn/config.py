"""gunicorn settings → a2wsgi_mp's options, for :mod:`a2wsgi_mp.gunicorn.worker`.

Kept apart from the worker class so the mapping (docs/gunicorn.md has the
table) reads as one piece and can be checked without booting a worker: each
function takes gunicorn's ``cfg`` and returns plain values.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from uvicorn.config import Config as UvicornConfig

from ..headlimits import HTTP_CHOICES, HeadLimits, auto_connection_limit, protocol_class

__all__ = ["customised", "head_bound", "head_limits", "pool_options", "request_limits", "ssl_options",
           "uvicorn_options"]

#: gunicorn has no header-read timeout (its sync workers sit behind nginx):
#: nginx's ``client_header_timeout``.
HEADER_TIMEOUT = 60.0
#: The gunicorn config's hooks that also run for the pool's processes (docs/gunicorn.md):
#: ``post_fork`` and ``worker_exit`` in each pool process, ``child_exit`` in the front when one ends.
POOL_HOOKS = ("post_fork", "worker_exit", "child_exit")

def request_limits(cfg: Any) -> tuple[int, int, int]:
    """gunicorn's effective (request line, header count, header field size)
    limits, as :class:`~a2wsgi_mp.headlimits.HeadLimits` normalises them; a
    line or field size of 0 means unlimited, as in gunicorn."""
    limits = head_limits(cfg)
    return limits.line, limits.max_fields, limits.field_size


def head_bound(cfg: Any) -> int:
    """The largest request head gunicorn's limits allow (for h11's buffer)."""
    return max(16 * 1024, head_limits(cfg).max_head)


def head_limits(cfg: Any, header_timeout: float = HEADER_TIMEOUT) -> HeadLimits:
    """gunicorn's ``limit_request_*`` as enforced while the head is read, with a
    header timeout and a connection cap that keeps file descriptors for the pool."""
    return HeadLimits.gunicorn(
        int(cfg.limit_request_line),
        int(cfg.limit_request_fields),
        int(cfg.limit_request_field_size),
        header_timeout=header_timeout,
        connections=auto_connection_limit(),
    )


#: The admin socket of each gunicorn worker (``-e A2WSGI_MP_ADMIN_SOCKET=/run/x/admin-{pid}.sock``):
#: ``a2wsgi-mp status --admin-socket '/run/x/admin-*.sock'`` sums them.
ADMIN_SOCKET_ENV = "A2WSGI_MP_ADMIN_SOCKET"


def pool_options(cfg: Any, app_ref: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """:class:`~a2wsgi_mp.pool.app.WSGIPool` options: ``--threads`` pool processes
    of one thread each, gunicorn's timeouts and ``max_requests``; ``extra``
    (the worker's ``POOL_OPTIONS``) wins."""
    options: dict[str, Any] = {
        "workers": max(1, int(cfg.threads or 1)),
        "threads": 1,
        "timeout": float(cfg.timeout or 0),
        "graceful_timeout": float(cfg.graceful_timeout or 0),
        "max_requests": max(0, int(cfg.max_requests or 0)),
        "max_requests_jitter": max(0, int(cfg.max_requests_jitter or 0)),
        "backlog": max(1, int(cfg.backlog or 2048)),
        # gunicorn's access log, written by the front's record of each request
        # (gunicorn's atoms and ours: a2wsgi_mp.accesslog) to gunicorn's access logger.
        "access_log": bool(cfg.accesslog),
        "access_log_format": cfg.access_log_format,
    }
    admin = os.environ.get(ADMIN_SOCKET_ENV)
    if admin:  # each gunicorn worker is a front with its own pool: one admin socket each
        options["admin_socket"] = admin if "{pid}" in admin else admin + ".{pid}"
    header_map = getattr(cfg, "header_map", None)  # gunicorn >= 22; "drop" is the pool's default too
    if header_map in ("refuse", "dangerous"):
        options["header_map"] = header_map
    if not isinstance(app_ref, str):
        options["start_method"] = "fork"  # an object reaches the pool only through fork
    hooks = tuple(name for name in POOL_HOOKS if customised(cfg, name))
    if hooks and cfg.config:  # the config file that defines them, imported by the pool's processes too
        options["hooks"], options["hook_names"] = cfg.config, hooks
    options.update(extra)
    return options


def uvicorn_options(cfg: Any, extra: dict[str, Any], header_timeout: float = HEADER_TIMEOUT) -> dict[str, Any]:
    """uvicorn ``Config`` keyword arguments for the front; ``extra`` (the
    worker's ``CONFIG_KWARGS``) wins.  A parser named by ``http`` ("auto",
    "httptools", "h11") becomes its bounded class (:mod:`a2wsgi_mp.headlimits`)."""
    options: dict[str, Any] = {
        "log_config": None,
        "lifespan": "off",  # the worker starts and stops the pool itself
        "proxy_headers": bool(cfg.forwarded_allow_ips),
        "forwarded_allow_ips": cfg.forwarded_allow_ips or None,
        "timeout_keep_alive": cfg.keepalive,
        "limit_concurrency": cfg.worker_connections or None,
        "backlog": cfg.backlog,
        "access_log": False,  # the pool's access log (pool_options) replaces uvicorn's
        "timeout_graceful_shutdown": cfg.graceful_timeout,
    }
    options["h11_max_incomplete_event_size"] = head_bound(cfg)
    if cfg.is_ssl:
        options.update(ssl_options(cfg))
    options.update(extra)
    if options.get("http", "auto") in HTTP_CHOICES:
        options["http"] = protocol_class(options.get("http", "auto"), head_limits(cfg, header_timeout))
    return options


def ssl_options(cfg: Any) -> dict[str, Any]:
    """TLS for uvicorn: gunicorn's own context builder where uvicorn takes a
    factory, else gunicorn's ``ssl_options`` one by one."""
    if "ssl_context_factory" in inspect.signature(UvicornConfig.__init__).parameters:
        from gunicorn import sock as gsock

        # gunicorn's own context builder (certfile, keyfile, ca_certs,
        # cert_reqs, ciphers) run through the user's ``ssl_context`` hook.
        return {
            "ssl_certfile": cfg.certfile,
            "ssl_keyfile": cfg.keyfile,
            "ssl_context_factory": lambda _config, _default: gsock.ssl_context(cfg),
        }
    options = cfg.ssl_options
    return {
        "ssl_keyfile": options.get("keyfile"),
        "ssl_certfile": options.get("certfile"),
        "ssl_keyfile_password": options.get("password"),
        "ssl_cert_reqs": options.get("cert_reqs"),
        "ssl_ca_certs": options.get("ca_certs"),
        "ssl_ciphers": options.get("ciphers"),
        **({"ssl_version": options["ssl_version"]} if options.get("ssl_version") else {}),
    }


def customised(cfg: Any, name: str) -> bool:
    """Whether the server hook ``name`` was set by the user: the per-request
    hook layer is only worth its cost when a hook is not gunicorn's no-op."""
    setting = cfg.settings.get(name)
    if setting is None:
        return False
    default = getattr(setting, "default", None)
    return setting.value is not default and getattr(setting.value, "__code__", None) is not getattr(
        default, "__code__", None)


def layout_note(cfg: Any) -> str:
    """docs/gunicorn.md's mapping of ``--threads``, as the log says it once per arbiter."""
    workers, threads = int(cfg.workers or 1), max(1, int(cfg.threads or 1))
    fronts = f"{workers} front{'s' if workers != 1 else ''}"
    return (f"--threads {threads} means {threads} pool process(es) of one thread per gunicorn worker, not "
            f"threads: -w {workers} --threads {threads} runs {fronts} x {threads} pool processes = "
            f"{workers * threads} app processes, {workers * threads} requests at once (docs/gunicorn.md)")
