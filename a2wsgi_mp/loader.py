"""Find the WSGI app a worker serves, from an import string or an object."""

from __future__ import annotations

import ast
import importlib
import os
import sys
from typing import Any, Callable, Union

AppRef = Union[str, Callable[..., Any]]


class AppLoadError(Exception):
    """The app reference names nothing callable; the message names the reference."""


def describe(ref: AppRef) -> str:
    if isinstance(ref, str):
        return ref
    return getattr(ref, "__qualname__", None) or repr(ref)


def load_app(ref: AppRef) -> Callable[..., Any]:
    """Resolve ``module:attr``, ``module:factory()`` or ``module:factory('arg')``.

    Like gunicorn: a bare ``module`` means ``module:application``, and a call
    with literal arguments is evaluated (never arbitrary code).
    """
    if not isinstance(ref, str):
        if not callable(ref):
            raise AppLoadError(f"WSGI app {ref!r} is not callable")
        return ref
    module_name, _, expr = ref.partition(":")
    expr = expr or "application"
    if not module_name:
        raise AppLoadError(f"app reference {ref!r} must look like 'package.module:app'")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        call = _parse(expr)
    except (SyntaxError, ValueError) as exc:
        raise AppLoadError(f"app reference {ref!r}: cannot parse {expr!r} ({exc})") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(f"could not import module {module_name!r} for app {ref!r}: {exc}") from exc
        raise  # the module exists but its own imports fail: show the real traceback
    name, args, kwargs = call
    obj: Any = module
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {name!r} (app {ref!r})") from None
    if args is not None:
        obj = obj(*args, **kwargs)
    if not callable(obj):
        raise AppLoadError(f"app {ref!r} is not callable (it is a {type(obj).__name__})")
    return obj


def _parse(expr: str) -> tuple[str, tuple | None, dict]:
    """``name`` or ``name(literal, key=literal)`` -> (name, args or None, kwargs)."""
    node = ast.parse(expr.strip(), mode="eval").body
    if isinstance(node, (ast.Name, ast.Attribute)):
        return ast.unparse(node), None, {}
    if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        return ast.unparse(node.func), args, kwargs
    raise ValueError("expected a name or a call with literal arguments")
