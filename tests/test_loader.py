"""Resolving the WSGI app reference a worker loads."""

from __future__ import annotations

import pytest

from a2wsgi_mp.loader import AppLoadError, describe, load_app
from tests.apps import core_app, core_bare


def test_module_colon_attribute() -> None:
    assert load_app("tests.apps.core_app:app") is core_app.app


def test_dotted_attribute() -> None:
    assert load_app("tests.apps.core_app:_validated.__call__") == core_app._validated.__call__


def test_bare_module_means_application() -> None:
    assert load_app("tests.apps.core_bare") is core_bare.application


def test_factory_call_without_arguments() -> None:
    app = load_app("tests.apps.core_app:make_app()")
    assert callable(app) and app.greeting == "Hello"


def test_factory_call_with_literal_arguments() -> None:
    app = load_app("tests.apps.core_app:make_app('Hi there', upper=True)")
    assert app.greeting == "HI THERE"


def test_factory_call_with_non_literal_argument_is_refused() -> None:
    with pytest.raises(AppLoadError) as info:
        load_app("tests.apps.core_app:make_app(__import__('os').getcwd())")
    assert "tests.apps.core_app:make_app(" in str(info.value)


@pytest.mark.parametrize("expr", ["app +", "1 + 2", "app[0]", "lambda: app"])
def test_unparsable_expression(expr: str) -> None:
    ref = f"tests.apps.core_app:{expr}"
    with pytest.raises(AppLoadError) as info:
        load_app(ref)
    assert ref in str(info.value)


def test_missing_module_names_the_target() -> None:
    ref = "tests.apps.core_no_such_module:app"
    with pytest.raises(AppLoadError) as info:
        load_app(ref)
    assert ref in str(info.value)
    assert "tests.apps.core_no_such_module" in str(info.value)


def test_missing_top_level_package_names_the_target() -> None:
    ref = "core_no_such_package_at_all.sub:app"
    with pytest.raises(AppLoadError) as info:
        load_app(ref)
    assert ref in str(info.value)


def test_missing_attribute_names_the_target() -> None:
    ref = "tests.apps.core_app:no_such_app"
    with pytest.raises(AppLoadError) as info:
        load_app(ref)
    assert ref in str(info.value)
    assert "no_such_app" in str(info.value)


def test_bare_module_without_application() -> None:
    with pytest.raises(AppLoadError) as info:
        load_app("tests.apps.core_app")
    assert "application" in str(info.value)
    assert "tests.apps.core_app" in str(info.value)


def test_non_callable_names_the_target() -> None:
    ref = "tests.apps.core_app:NOT_CALLABLE"
    with pytest.raises(AppLoadError) as info:
        load_app(ref)
    assert ref in str(info.value)
    assert "not callable" in str(info.value)


def test_factory_returning_non_callable() -> None:
    ref = "tests.apps.core_app:_query({})"
    with pytest.raises(AppLoadError) as info:
        load_app(ref)
    assert ref in str(info.value)


def test_empty_module_name() -> None:
    with pytest.raises(AppLoadError) as info:
        load_app(":app")
    assert "':app'" in str(info.value)


def test_module_whose_own_import_fails_shows_the_real_error() -> None:
    # Not "no such module tests.apps.core_bad_import": the real missing dependency.
    with pytest.raises(ImportError) as info:
        load_app("tests.apps.core_bad_import:app")
    assert "core_dependency_that_does_not_exist" in str(info.value)


def test_module_raising_at_import_propagates() -> None:
    with pytest.raises(RuntimeError, match="refuses to import"):
        load_app("tests.apps.core_broken:app")


def test_callable_object_passes_through() -> None:
    assert load_app(core_app.app) is core_app.app


def test_non_callable_object() -> None:
    with pytest.raises(AppLoadError, match="42"):
        load_app(42)  # type: ignore[arg-type]


def test_describe() -> None:
    assert describe("pkg.mod:app") == "pkg.mod:app"
    assert describe(core_app.make_app) == "make_app"


def test_missing_dependency_with_a_prefix_name_is_not_reported_as_the_module_missing() -> None:
    # tests.apps.core_prefix_dep exists; it imports tests.apps.core_prefix, which does not.
    with pytest.raises(ImportError) as info:
        load_app("tests.apps.core_prefix_dep:app")
    assert info.value.name == "tests.apps.core_prefix"


def test_spawn_needs_an_import_string() -> None:
    from a2wsgi_mp import WSGIPool

    def app(environ, start_response):  # pragma: no cover - never called
        return []

    with pytest.raises(ValueError, match="import string"):
        WSGIPool(app, start_method="spawn")
    WSGIPool("tests.apps.core_app:app", start_method="spawn")  # fine: nothing starts until startup()
