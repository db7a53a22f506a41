"""The docstring examples run, and the README documents what users see."""

import doctest
import importlib
import pkgutil

import pytest

import lightning_radam
import lightning_radam.callbacks

MODULES = sorted(
    {m.name for package in (lightning_radam, lightning_radam.callbacks) for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")}
    | {"lightning_radam", "lightning_radam.callbacks"}
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_public_names_are_exported():
    for name in ("RAdam", "RAdamMixin", "RectificationStats", "radam", "__version__"):
        assert hasattr(lightning_radam, name)
