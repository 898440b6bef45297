"""Server hooks that run in the pool's own processes, with gunicorn's names and meaning.

Libraries that keep threads or connections must be started again in every
process after a fork (OpenTelemetry's ``BatchSpanProcessor``, database and
Sentry clients), and prometheus_client's multiprocess mode must be told when a
process is gone.  Under gunicorn that is what its server hooks are for; here
they are functions of a *hooks module* (``--hooks myproject.pool_hooks``, a
path to a ``.py`` file, or ``WSGIPool(hooks="myproject.pool_hooks")``):

=====================  =========================  ==============================================
hook                   runs in                    when
=====================  =========================  ==============================================
``post_fork``          each worker                after fork (or spawn), before the app is loaded
``post_worker_init``   each worker                after the app is loaded, before its first request
``worker_exit``        each worker                when it leaves of its own accord (retired,
                                                  drained); not when killed or crashed
``child_exit``         the front                  after any worker ended, whatever the reason
                                                  (not those ended by the final shutdown)
``when_ready``         the front                  once the pool is ready
``on_reload``          the front                  when a reload (SIGHUP) begins
=====================  =========================  ==============================================

The signatures are gunicorn's (``post_fork(server, worker)``,
``post_worker_init(worker)``, ``worker_exit(server, worker)``,
``child_exit(server, worker)``, ``when_ready(server)``, ``on_reload(server)``),
so a gunicorn config file's hooks can be used as they are: ``worker`` has
``pid``, ``id`` (also ``age``) and ``log``; ``server`` has ``pid`` (the front's)
and ``log``.

The module is imported in the front and in every worker (with ``preload``, once
in the zygote, before the workers fork): keep its top level light.  A worker
whose ``post_fork`` or ``post_worker_init`` raises fails to boot, as if the app
could not be imported; an exception in any other hook is logged and ignored.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from typing import Any, Callable, Iterable

#: The hooks a hooks module may define, and where each runs.
WORKER_HOOKS = ("post_fork", "post_worker_init", "worker_exit")
FRONT_HOOKS = ("child_exit", "when_ready", "on_reload")
NAMES = WORKER_HOOKS + FRONT_HOOKS

log = logging.getLogger("a2wsgi_mp.hooks")


class HookError(Exception):
    """The hooks module could not be loaded, or a boot hook raised."""


class WorkerView:
    """What a hook gets as ``worker``: the attributes gunicorn hooks use."""

    def __init__(self, pid: int | None, wid: int = 0) -> None:
        self.pid = pid
        self.id = wid
        #: gunicorn's worker number (its "age"): ours is the worker's id in the pool.
        self.age = wid
        self.log = log

    def __repr__(self) -> str:
        return f"<worker {self.id} pid {self.pid}>"


class ServerView:
    """What a hook gets as ``server``: the front (gunicorn's arbiter stands there)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.log = log

    def __repr__(self) -> str:
        return f"<a2wsgi_mp front pid {self.pid}>"


class Hooks:
    """The hooks of one module; a missing hook does nothing."""

    def __init__(self, ref: str | None = None, namespace: Any = None, names: Iterable[str] | None = None) -> None:
        self.ref = ref
        self._fns: dict[str, Callable[..., Any]] = {}
        for name in NAMES if names is None else [n for n in NAMES if n in set(names)]:
            fn = getattr(namespace, name, None) if namespace is not None else None
            if fn is not None and callable(fn):
                self._fns[name] = fn

    def __bool__(self) -> bool:
        return bool(self._fns)

    def has(self, name: str) -> bool:
        return name in self._fns

    def call(self, name: str, *args: Any) -> None:
        """Run hook ``name``; its exception propagates (boot hooks: the worker fails)."""
        fn = self._fns.get(name)
        if fn is not None:
            fn(*args)

    def call_logged(self, name: str, *args: Any) -> None:
        """Run hook ``name``; an exception is logged, not raised."""
        try:
            self.call(name, *args)
        except Exception:
            log.exception("the %s hook of %s raised", name, self.ref)


def load_hooks(ref: str | None, names: Iterable[str] | None = None) -> Hooks:
    """The hooks of ``ref``: a module name (``pkg.hooks``), a ``.py`` file, or
    ``python:pkg.hooks`` (gunicorn's spelling); no hooks for None.  ``names``:
    only these hooks of the module (the gunicorn worker's mapping)."""
    if not ref:
        return Hooks()
    name = ref.removeprefix("python:")
    try:
        if name.endswith(".py") or os.sep in name:
            path = os.path.abspath(name)
            module_name = "a2wsgi_mp_hooks_" + "".join(c if c.isalnum() else "_" for c in path)
            module = sys.modules.get(module_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(module_name, path)
                if spec is None or spec.loader is None:
                    raise HookError(f"cannot load hooks from {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[module_name]
                    raise
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(name)
    except HookError:
        raise
    except FileNotFoundError as exc:
        raise HookError(f"hooks file {ref!r} not found: {exc}") from None
    except ImportError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise HookError(f"could not import hooks module {ref!r}: {exc}") from None
        raise
    return Hooks(ref, module, names)
