"""One log format, and visible pool records under any ASGI server.

The CLI configures uvicorn's loggers and ours with :func:`cli_logging_config`
(gunicorn's layout: time, pid, level; or, with ``--log-format json``, one JSON
object per line for every record, access lines included: :class:`JsonFormatter`).  Under another server (hypercorn,
granian, plain uvicorn) nothing configures the ``a2wsgi_mp`` logger, and
Python's last-resort handler prints bare lines without time or level;
:func:`ensure_visible` then adds one handler of ours — only when neither our
logger nor the root logger has one, and it steps aside (by not emitting) as
soon as the application configures the root logger, so the app's logging
configuration always wins.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatterBase

LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
TRACE = 5


def level_number(name: str) -> int:
    return TRACE if name.lower() == "trace" else logging.getLevelName(name.upper())


LOG_FORMATS = ("text", "json")


class JsonFormatter(_JsonFormatterBase):
    """One JSON object per record: time, level, logger, pid, message, the traceback
    if any, and for an access line its fields (status, duration, queued, worker_pid...)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
                         datefmt="%Y-%m-%dT%H:%M:%S%z", reserved_attrs=[*RESERVED_ATTRS, "color_message", "access"])

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        access = getattr(record, "access", None)  # an access line's Atoms (a2wsgi_mp.accesslog)
        if access is not None:
            log_data.update(access.fields())


def cli_logging_config(level: str, access_log: bool, log_format: str = "text") -> dict[str, Any]:
    """A dictConfig for uvicorn's loggers and ours, one format for all."""
    number = level_number(level)
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    json = {"()": f"{__name__}.JsonFormatter"}
    formatter: dict[str, Any] = json if log_format == "json" else {"format": LOG_FORMAT, "datefmt": DATE_FORMAT}
    # An access line carries its own time (gunicorn's %(t)s), as gunicorn writes it.
    access: dict[str, Any] = json if log_format == "json" else {"format": "%(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter, "access": access},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": number, "propagate": False},
            "uvicorn.error": {"level": number},
            "uvicorn.access": {"handlers": [], "level": number, "propagate": False},
            "a2wsgi_mp": {"handlers": ["default"], "level": number, "propagate": False},
            "a2wsgi_mp.access": {"handlers": ["access"] if access_log else [], "level": number, "propagate": False},
        },
    }


class _FallbackHandler(logging.StreamHandler):
    """Writes only while the root logger has no handler of its own."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.root.handlers:
            return  # the app configured logging since: propagation reaches its handlers
        super().emit(record)


def ensure_visible() -> None:
    """Give the pool's records a time and a level when nobody configured logging."""
    log = logging.getLogger("a2wsgi_mp")
    if log.handlers or logging.root.handlers:
        return
    handler = _FallbackHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)  # the lifecycle lines ("pool ready", "stopped") are INFO
