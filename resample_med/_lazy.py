"""Lazy package namespaces (PEP 562): a package's public names are imported from their submodule on
first use, so that ``import resample_med`` and ``resample-med --help`` do not pay for torch, MONAI
and diffusers until something needs them.

Usage in a package ``__init__``::

    __getattr__, __dir__ = lazy_namespace(__name__, {"load_volume": "load", "noise": None})

maps each public name to the submodule defining it (``None``: the name is itself a submodule).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_namespace(
    package: str, exports: dict[str, str | None]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``exports`` (name -> submodule or ``None``)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        submodule = exports[name]
        if submodule is None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this hook
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
