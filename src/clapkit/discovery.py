"""Registries whose entries are found, not listed: the formats of ``clapkit.data``, the
towers, objectives and evaluators each register themselves in their own file, and
:func:`import_package` imports every file of their package once, on the first lookup.
So adding one is adding its file."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache


@cache
def import_package(name: str) -> None:
    """Import every module of package ``name`` (once per process)."""
    package = importlib.import_module(name)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{name}.{info.name}")
