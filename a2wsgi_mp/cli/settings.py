"""Every ``a2wsgi-mp`` option in one table, and where each value comes from.

A row of :data:`OPTIONS` gives an option its command-line flag (``--max-requests``),
its environment variable (``A2WSGI_MP_MAX_REQUESTS``) and its config-file key
(``max_requests`` or ``max-requests`` in ``[tool.a2wsgi_mp]`` of ./pyproject.toml,
or in the file given with ``--config``) at once, so an option added on one line
gets all three.  Precedence: command line > environment > file > default.

``to`` says where a value goes: ``"uvicorn"`` (the :class:`uvicorn.Config`
argument of the same name), ``"pool"`` (the :class:`~a2wsgi_mp.config.PoolConfig`
field of the same name, whose default is the single source of truth) or
``"cli"`` (used by the command line itself).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .. import __version__
from ..accesslog import DEFAULT_FORMAT
from ..config import START_METHODS, WORKER_SCHEDS, PoolConfig
from ..environ import HEADER_MAPS
from ..headlimits import HTTP_CHOICES
from ..logs import LOG_FORMATS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "A2WSGI_MP_"
FILE_TABLE = ("tool", "a2wsgi_mp")
_POOL_DEFAULTS = {f.name: f.default for f in fields(PoolConfig)}
_UNSET = object()


def size(text: str) -> int:
    """``1048576``, ``512K``, ``1M``, ``2G`` -> bytes."""
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    text = str(text).strip().upper().removesuffix("B").removesuffix("I")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        return int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def port(text: str) -> int:
    """A TCP port: 0 (any free one) to 65535."""
    number = int(text)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a TCP port (0-65535)")
    return number


def level(text: str) -> str:
    """A log level name, in any case (``DEBUG`` as ``debug``)."""
    return str(text).strip().lower()


def boolean(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (use true/false, 1/0, yes/no, on/off)")


@dataclass(frozen=True)
class Option:
    name: str
    kind: Callable[[str], Any] = str
    help: str = ""
    default: Any = None
    to: str = "uvicorn"
    group: str = "server"
    choices: Sequence[str] | None = None
    switch: bool = False  # --name / --no-name
    many: bool = False  # repeatable; comma-separated in the environment
    cli_flag: str = ""  # when uvicorn's flag is not the name (--reload-dir for reload_dirs)
    short: str = ""  # gunicorn's one-letter flag, where uvicorn has none that clashes (-w, -b)

    @property
    def flag(self) -> str:
        return self.cli_flag or "--" + self.name.replace("_", "-")

    @property
    def metavar(self) -> str | None:
        if self.choices is not None:
            return None
        word = self.name.split("_")[-1].upper()
        return {int: "N", float: "SECONDS", size: "SIZE"}.get(self.kind, word[:-1] if self.many else word)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def convert(self, value: Any, where: str) -> Any:
        """A value from the environment (a string) or a TOML file (any type) -> the option's type."""
        try:
            if self.many:
                items = value if isinstance(value, list) else [v for v in str(value).split(",") if v.strip()]
                return [self.kind(str(v).strip()) for v in items]
            if self.switch:
                return value if isinstance(value, bool) else boolean(value)
            if isinstance(value, bool) or isinstance(value, (list, dict)):
                raise argparse.ArgumentTypeError(f"expected {getattr(self.kind, '__name__', 'a value')}")
            result = self.kind(str(value))
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise SettingsError(f"{where}: invalid value {value!r} for {self.flag}: {exc}") from None
        if self.choices is not None and result not in self.choices:
            raise SettingsError(f"{where}: {self.flag} must be one of {', '.join(self.choices)}, not {result!r}")
        return result


def pool(name: str, kind: Callable[[str], Any], help: str, **extra: Any) -> Option:
    """A :class:`PoolConfig` field; its default comes from there."""
    return Option(name, kind, help, _POOL_DEFAULTS[name], to="pool", group="pool", **extra)


OPTIONS: list[Option] = [
    # -- server (uvicorn.Config) --------------------------------------------------------------
    Option("host", str, "bind address", "127.0.0.1"),
    Option("fronts", int, "front processes on the listening socket (uvicorn's --workers manager), each with "
           "its share of --workers", 1, to="cli"),
    Option("port", port, "bind port", 8000),
    Option("bind", str, "gunicorn's -b: HOST:PORT, [IPV6]:PORT, HOST (port 8000) or unix:PATH; "
           "sets --host/--port or --uds", to="cli", short="-b"),
    Option("uds", str, "bind to this Unix domain socket instead"),
    Option("fd", int, "serve on this inherited listening socket descriptor (default: systemd's socket "
           "activation, LISTEN_FDS, when it passes one)"),
    Option("http", str, "HTTP parser (auto: httptools if installed, else h11)", "auto",
           choices=HTTP_CHOICES),
    Option("loop", str, "event loop (auto: uvloop if installed, else asyncio)", "auto",
           choices=("auto", "asyncio", "uvloop")),
    Option("timeout_keep_alive", int, "close idle keep-alive connections after N seconds", 5),
    Option("limit_concurrency", int, "503 beyond N connections + tasks at once in the front (default: no limit)"),
    Option("root_path", str, "the prefix a proxy strips before passing requests on: "
           "the app sees it as SCRIPT_NAME", ""),
    Option("server_header", boolean, "send a Server header", True, switch=True),
    Option("date_header", boolean, "send a Date header", True, switch=True),
    # -- proxy ------------------------------------------------------------------------------------
    Option("proxy_headers", boolean, "take the client address and scheme from X-Forwarded-For/-Proto, "
           "from trusted peers only (--forwarded-allow-ips)", True, group="proxy", switch=True),
    Option("forwarded_allow_ips", str, "comma-separated peer addresses/networks whose X-Forwarded-* headers "
           "are trusted; '*' trusts every peer", "127.0.0.1,::1", group="proxy"),
    # -- TLS --------------------------------------------------------------------------------------
    Option("ssl_keyfile", str, "TLS private key file (PEM)", group="tls"),
    Option("ssl_certfile", str, "TLS certificate (chain) file (PEM)", group="tls"),
    Option("ssl_keyfile_password", str, "password of the TLS private key", group="tls"),
    Option("ssl_ca_certs", str, "CA certificates file for client certificates", group="tls"),
    Option("ssl_cert_reqs", int, "client certificates: 0 none, 1 optional, 2 required", 0, group="tls",
           choices=(0, 1, 2)),  # type: ignore[arg-type]
    Option("ssl_ciphers", str, "TLS ciphers (OpenSSL syntax)", "TLSv1", group="tls"),
    # -- request head limits (gunicorn's names and defaults; enforced while reading) --------------
    Option("limit_request_line", int, "414 for a longer request line; 0 = 1 MiB (max 8190)", 4094,
           to="cli", group="limits"),
    Option("limit_request_fields", int, "431 for more header fields (max 32768)", 100, to="cli", group="limits"),
    Option("limit_request_field_size", int, "431 for a longer header line; 0 = 1 MiB", 8190, to="cli",
           group="limits"),
    Option("limit_request_head", int, "431 for a larger head in all (nginx allows 4 x 8 KB); 0 = what the "
           "limits above allow, about 800 KB, gunicorn's", 65536, to="cli", group="limits"),
    Option("header_timeout", float, "408 (or a plain close if nothing came) for a request head not complete "
           "in time, as nginx's client_header_timeout; 0 = off", 60.0, to="cli", group="limits"),
    Option("send_timeout", float, "close a connection whose client accepted no byte of a response for N "
           "seconds, as nginx's send_timeout; 0 = off", 60.0, to="cli", group="limits"),
    Option("limit_connections", int, "close new connections at once while N are open; 0 = no cap "
           "(default: the open-files limit less a tenth)", to="cli", group="limits"),
    # -- logging ----------------------------------------------------------------------------------
    Option("log_level", level, "log level (any case)", "info", group="logging",
           choices=("critical", "error", "warning", "info", "debug", "trace")),
    Option("log_config", str, "logging configuration file (.json, .yaml, .ini) given to uvicorn; "
           "replaces a2wsgi-mp's own log format", group="logging"),
    Option("access_log", boolean, "one line per request on stdout, refusals (408, 413, 414, 431, 503...) "
           "included", True, to="cli", group="logging", switch=True),
    Option("access_log_format", str, "the access log line: gunicorn's atoms (%%(h)s %%(r)s %%(s)s %%(b)s "
           "%%(L)s %%({header}i)s...) and ours: %%(w)s worker pid, %%(Q)s seconds queued, %%(I)s body bytes "
           "in, %%(R)s the front's reason (docs/cli.md)", DEFAULT_FORMAT, to="cli",
           group="logging"),
    Option("log_format", str, "text, or json: one JSON object per line for every record, access lines "
           "included", "text", to="cli", group="logging", choices=LOG_FORMATS),
    # -- development ------------------------------------------------------------------------------
    Option("shutdown_delay", float, "on SIGTERM, answer health checks 503 and keep serving N seconds "
           "before draining (a load balancer stops routing first); a second Ctrl-C ends it", 0.0,
           to="cli", group="lifecycle"),
    Option("app_dir", str, "import the app from this directory (put first on the workers' path)", ".",
           to="cli", group="development"),
    Option("reload", boolean, "reload the pool's workers when a watched file changes (development)", False,
           to="cli", group="development", switch=True),
    Option("reload_dirs", str, "a directory --reload watches (repeatable; default: --app-dir)", None,
           to="cli", group="development", many=True, cli_flag="--reload-dir"),
    # -- pool (PoolConfig) ------------------------------------------------------------------------
    pool("workers", int, "worker processes (0: one per CPU this process may use: affinity and "
         "cgroup cpu.max)", short="-w"),
    pool("workers_min", int, "elastic pool: never fewer workers than this"),
    pool("workers_max", int, "elastic pool: start workers while requests queue, up to this many"),
    pool("worker_idle_timeout", float, "elastic pool: retire a worker above the minimum idle this long"),
    pool("preload", boolean, "import the app once, in the zygote the workers fork from (shared memory); "
         "a reload imports the new code in a fresh one", switch=True),
    pool("threads", int, "threads per worker process"),
    pool("start_method", str, "fork (workers forked from a clean zygote; default on Linux) or spawn",
         choices=START_METHODS),
    pool("timeout", float, "hard per-request timeout in seconds: 504 and the worker replaced; 0 = off"),
    pool("graceful_timeout", float, "seconds in-flight requests get on shutdown"),
    pool("max_requests", int, "recycle a worker after N requests; 0 = never"),
    pool("max_requests_jitter", int, "add up to N to --max-requests, per worker"),
    pool("max_rss", int, "recycle a worker above N MiB of RSS, between requests; 0 = off"),
    pool("max_rss_hard", int, "end a worker the moment one request takes its RSS past N MiB (502 for that "
         "request, its stacks logged); 0 = off"),
    pool("max_lifetime", float, "recycle a worker older than N seconds, between requests; 0 = off"),
    pool("backlog", int, "requests that may wait for a worker before 503"),
    pool("queue_timeout", float, "503 for a request that waited N seconds for a worker; 0 = off"),
    pool("spool_threshold", size, "request bodies larger than this (bytes, or 512K, 1M…) go to a temp file"),
    pool("max_body_size", size, "413 for larger request bodies (default: no limit)"),
    pool("body_timeout", float, "408 when a client sends nothing of its request body for N seconds "
         "(nginx's client_body_timeout); 0 = off"),
    pool("response_buffer", size, "bytes of a response the front holds for a slow client so the worker is "
         "free at once (0 = the worker waits)"),
    pool("spool_dir", str, "directory for spooled request bodies (default: the system temp dir)"),
    pool("metrics_path", str, "serve Prometheus metrics at this path of the public listener (default: off; "
         "prefer --admin-socket/--admin-bind)"),
    pool("admin_socket", str, "serve /metrics and /status (a2wsgi-mp status) on this Unix socket"),
    pool("admin_bind", str, "serve /metrics and /status on this HOST:PORT (not the public one; for a "
         "Prometheus scrape)"),
    pool("reload_check", str, "a path (/healthz) every worker started after start-up (a reload's, a "
         "replacement) must answer below 400 before it serves; in a reload the old workers serve on unless it does"),
    pool("hooks", str, "a hooks module or .py file: post_fork, post_worker_init, worker_exit run in each "
         "worker; child_exit, when_ready, on_reload in the front (gunicorn's names)"),
    pool("health_path", str, "answer health checks at this path: 200 while a worker is ready and the "
         "server is not shutting down, 503 otherwise; never sent to a worker (default: off)"),
    pool("header_map", str, "header names with underscores: dropped, refused (400) or dangerous (kept, "
         "and X_Forwarded_For lands on HTTP_X_FORWARDED_FOR!)", choices=HEADER_MAPS),
    pool("worker_sched", str, "the workers' CPU scheduling policy (Linux): normal, batch, idle (the "
         "front wins every wake-up: an async route in the front keeps its latency beside CPU-bound workers; "
         "workers get only spare CPU), or autogroup (the workers in a session and autogroup of their own at "
         "nice 19: the front wins against them, and so does any other session's work; only outside a cpu "
         "cgroup, i.e. not in a container)", choices=WORKER_SCHEDS),
    pool("ipc", str, "bodies via the socketpair (pipe) or a shared-memory ring per slot (shm)",
         choices=("pipe", "shm")),
    pool("fast_path", boolean, "requests without a body skip the ASGI layer in the front, complete "
         "responses leave in one write (httptools only; about a third less front CPU per request; "
         "--no-fast-path keeps every request on ASGI)", switch=True),
    pool("direct_stream", boolean, "a worker writes a streamed response's body to the client itself, handing "
         "the rest back to the front when the client stops reading (httptools, plain TCP or Unix socket; "
         "--no-direct-stream: the front relays every byte)", switch=True),
]

#: The app itself and the config file path also come from the environment.
APP_ENV = ENV_PREFIX + "APP"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
BY_NAME = {o.name: o for o in OPTIONS}

GROUPS = {
    "server": "server (uvicorn)",
    "proxy": "behind a proxy",
    "tls": "TLS",
    "limits": "request head limits (gunicorn's names and defaults)",
    "logging": "logging",
    "lifecycle": "lifecycle (systemd, Kubernetes)",
    "development": "development",
    "pool": "worker pool",
}

EPILOG = f"""\
Every option can also be set in the environment ({ENV_PREFIX}WORKERS=4, {ENV_PREFIX}PROXY_HEADERS=false,
{APP_ENV}=mysite.wsgi:application) or in a TOML file: [tool.a2wsgi_mp] in ./pyproject.toml, or the file
given with --config / {CONFIG_ENV} (keys as in 'workers = 4', 'forwarded_allow_ips = "10.0.0.0/8"').
Precedence: command line > environment > file > defaults.  SIGHUP reloads the workers; SIGTERM drains.

Exit status: 0 stopped cleanly; 1 crashed; 2 bad usage or configuration (options, config file, TLS files);
3 the app could not be loaded; 4 could not listen (address in use, no permission, bad --fd)."""


class SettingsError(Exception):
    """A bad value or key in the environment or a config file (exit status 2)."""


def _shown(option: Option) -> str:
    if option.default in (None, ""):
        return ""
    if option.switch:
        return f"default: {'on' if option.default else 'off'}; "
    return f"default: {str(option.default).replace('%', '%%')}; "


class _Version(argparse.Action):
    """``--version``: ours, and the uvicorn and Python it runs on (uvicorn imported only here)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        import platform

        import uvicorn

        print(f"a2wsgi-mp {__version__} with uvicorn {uvicorn.__version__} on "
              f"{platform.python_implementation()} {platform.python_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="a2wsgi-mp",
        description="Serve a WSGI app from uvicorn through a supervised pool of worker processes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("app", nargs="?", default=argparse.SUPPRESS,
                   help=f"the WSGI app as 'package.module:app' (or 'module:factory()'); env {APP_ENV}")
    p.add_argument("-c", "--config", default=argparse.SUPPRESS, metavar="FILE",
                   help=f"TOML config file ([tool.a2wsgi_mp] table or top-level keys; default: "
                        f"./pyproject.toml's [tool.a2wsgi_mp]); env {CONFIG_ENV}")
    p.add_argument("--version", action=_Version, nargs=0, default=argparse.SUPPRESS,
                   help="show a2wsgi-mp's version, uvicorn's and Python's, and exit")
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    for o in OPTIONS:
        text = f"{o.help} ({_shown(o)}env {o.env})"
        if o.switch:
            groups[o.group].add_argument(o.flag, dest=o.name, action=argparse.BooleanOptionalAction,
                                         default=argparse.SUPPRESS, help=text)
        else:
            flags = (o.short, o.flag) if o.short else (o.flag,)
            groups[o.group].add_argument(*flags, dest=o.name, type=o.kind, choices=o.choices, metavar=o.metavar,
                                         action="append" if o.many else "store",
                                         default=argparse.SUPPRESS, help=text)
    return p


def read_file(path: Path, *, required: bool) -> dict[str, Any]:
    """The settings table of a TOML file: ``[tool.a2wsgi_mp]``, or its top level when it has none."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise SettingsError(f"config file not found: {path}") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from None
    table: Any = data
    for key in FILE_TABLE:
        table = table.get(key, _UNSET) if isinstance(table, dict) else _UNSET
    if table is _UNSET:
        return {} if path.name == "pyproject.toml" else data
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: [tool.a2wsgi_mp] must be a table")
    return table


def _from_file(table: Mapping[str, Any], path: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in table.items():
        name = key.replace("-", "_")
        if name == "app":
            values["app"] = str(raw)
            continue
        option = BY_NAME.get(name)
        if option is None:
            raise SettingsError(f"{path}: unknown option {key!r}")
        values[name] = option.convert(raw, str(path))
    return values


def _from_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if option.env in environ:
            values[option.name] = option.convert(environ[option.env], option.env)
    if environ.get(APP_ENV):
        values["app"] = environ[APP_ENV]
    known = {o.env for o in OPTIONS} | {APP_ENV, CONFIG_ENV}
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)
    return values, unknown


def parse_bind(text: str) -> dict[str, Any]:
    """gunicorn's ``-b``: ``HOST:PORT``, ``[IPV6]:PORT``, ``HOST`` or ``unix:PATH`` -> host/port or uds."""
    text = text.strip()
    if text.startswith("unix:"):
        return {"uds": text[5:]}
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return {"host": host, "port": port(rest[1:]) if rest.startswith(":") else 8000}
    host, sep, number = text.rpartition(":")
    if not sep:
        return {"host": text, "port": 8000}
    try:
        return {"host": host or "0.0.0.0", "port": port(number)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"not HOST:PORT, [IPV6]:PORT or unix:PATH: {text!r}") from None


@dataclass
class Settings:
    values: dict[str, Any]
    #: Where each value came from: "command line", "environment", a file path, or "default".
    sources: dict[str, str]
    warnings: list[str]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def pool_options(self) -> dict[str, Any]:
        """What a front's WSGIPool takes: the pool options and the access log's."""
        return {**self.target("pool"), "access_log": self.access_log,
                "access_log_format": self.access_log_format}

    def target(self, to: str) -> dict[str, Any]:
        """The values bound for uvicorn, the pool or the CLI.  Pool options left at
        their default are left out, so PoolConfig decides them."""
        return {
            o.name: self.values[o.name]
            for o in OPTIONS
            if o.to == to and (to != "pool" or self.sources[o.name] != "default")
        }


def resolve(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
            cwd: Path | None = None) -> Settings:
    """Parse the command line and merge it over the environment, the file and the defaults.
    Exits with status 2 (argparse's usage error) on any bad value."""
    parser = build_parser()
    cli = vars(parser.parse_args(argv))
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    try:
        config = cli.pop("config", None) or environ.get(CONFIG_ENV)
        if config:
            path = Path(config)
            file_values = _from_file(read_file(path, required=True), path)
        else:
            path = cwd / "pyproject.toml"
            file_values = _from_file(read_file(path, required=False), path)
        env_values, unknown = _from_env(environ)
    except SettingsError as exc:
        parser.error(str(exc))
    values: dict[str, Any] = {o.name: o.default for o in OPTIONS}
    sources = dict.fromkeys(values, "default")
    for layer, where in ((file_values, str(path)), (env_values, "environment"), (cli, "command line")):
        values.update(layer)
        sources.update(dict.fromkeys(layer, where))
    if "app" not in values:
        parser.error(f"the following arguments are required: app (or {APP_ENV}, or 'app' in the config file)")
    if values.get("bind"):
        try:
            bound = parse_bind(values["bind"])
        except argparse.ArgumentTypeError as exc:
            parser.error(f"argument -b/--bind: {exc}")
        values.update(bound)
        sources.update(dict.fromkeys(bound, sources["bind"]))
    warnings = [f"ignoring unknown environment variable {name}" for name in unknown]
    return Settings(values, sources, warnings)
