"""Flame's exception tree (protocol/errors.py): one root, every class in it and drawn there."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import protocol
import protocol.errors
from protocol.errors import FlameBaseError

PACKAGES = ("protocol", "flamed", "tui")


def our_exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in our packages (entry-point `__main__` modules aside)."""
    found: dict[str, type[BaseException]] = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names = [package_name] + [
            info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}.")
        ]
        for name in names:
            if name.endswith(".__main__"):
                continue
            module = importlib.import_module(name)
            for _, value in inspect.getmembers(module, inspect.isclass):
                if issubclass(value, BaseException) and value.__module__ == name:
                    found[f"{name}.{value.__qualname__}"] = value
    return list(found.values())


def test_every_exception_of_ours_derives_from_the_one_root() -> None:
    """Breaks if an exception class is added (or left) outside the tree: `except
    FlameBaseError` would miss it and the docstring's tree would lie."""
    outside = [f"{c.__module__}.{c.__qualname__}" for c in our_exception_classes() if not issubclass(c, FlameBaseError)]
    assert outside == []


def test_the_tree_in_protocol_errors_names_every_exception_and_where_it_lives() -> None:
    """Breaks if a class joins the tree without being drawn in protocol/errors.py, the one
    place a reader looks for it (httpx's `_exceptions.py` style)."""
    doc = protocol.errors.__doc__ or ""
    classes = [c for c in our_exception_classes() if c is not FlameBaseError]
    assert classes, "found no exception classes: the scan is broken"
    missing = [f"{c.__module__}.{c.__qualname__}" for c in classes if f"+-- {c.__name__}" not in doc]
    assert missing == []
    homes = [c.__module__ for c in classes if c.__module__ not in doc]
    assert homes == [], "the tree must say where each class lives"


def test_the_root_lives_in_the_package_that_imports_nothing_of_ours() -> None:
    """Breaks if the root moves where the core or the SDK may not import it from."""
    assert FlameBaseError.__module__ == "protocol.errors"
    assert protocol.__doc__ is not None
