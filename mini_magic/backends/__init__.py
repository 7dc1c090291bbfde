"""Backend registry: built-in backends plus any registered under the ``mini_magic.backends`` entry-point group."""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points

from ..options import RunOptions
from .base import Backend, RunHandle

__all__ = ["Backend", "RunHandle", "RunOptions", "backend_classes"]

_BUILTIN = {"local": "mini_magic.backends.local:LocalBackend", "modal": "mini_magic.backends.modal:ModalBackend"}


def _load(target: str) -> type[Backend]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@lru_cache(maxsize=1)
def backend_classes() -> dict[str, type[Backend]]:
    """Every backend that can be named with ``--backend``; importing one must not need its optional SDK.

    Cached: scanning entry points costs milliseconds, and every cell asks.
    """
    found = {name: _load(target) for name, target in _BUILTIN.items()}
    for entry in entry_points(group="mini_magic.backends"):
        if entry.name not in found:
            found[entry.name] = entry.load()
    return found
