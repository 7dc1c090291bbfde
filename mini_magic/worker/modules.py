"""Worker side: import the notebook's local modules from the source shipped in the Job, then forget them.

The finder sits first on ``sys.meta_path`` for the length of one run, so the shipped (current) source wins over any
file of the same name the worker could see, and the modules are evicted from ``sys.modules`` afterwards: an edited
module is never served stale by a warm worker.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import linecache
import os
import sys
import sysconfig
from collections.abc import Iterable
from types import ModuleType

from ..wire import ModuleSource


class ShippedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, modules: Iterable[ModuleSource]) -> None:
        self.modules = {m.name: m for m in modules}

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[override]
        shipped = self.modules.get(fullname)
        if shipped is None:
            return None
        spec = importlib.util.spec_from_loader(fullname, self, origin=shipped.origin, is_package=shipped.is_package)
        if spec is not None:
            spec.has_location = True
            if shipped.is_package:
                spec.submodule_search_locations = []
        return spec

    def create_module(self, spec):  # type: ignore[override]
        return None

    def exec_module(self, module: ModuleType) -> None:
        shipped = self.modules[module.__name__]
        module.__file__ = shipped.origin
        code = compile(shipped.source, shipped.origin, "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - the notebook's own module

    def get_source(self, fullname: str) -> str | None:
        shipped = self.modules.get(fullname)
        return shipped.source if shipped else None

    def __enter__(self) -> ShippedModules:
        for shipped in self.modules.values():
            lines = shipped.source.splitlines(keepends=True)
            linecache.cache[shipped.origin] = (len(shipped.source), None, lines, shipped.origin)
            # A stale copy imported by an earlier run must not shadow the shipped one.
            sys.modules.pop(shipped.name, None)
        sys.meta_path.insert(0, self)
        if self.modules:
            importlib.invalidate_caches()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


_SYSTEM_PATHS = tuple(
    os.path.realpath(p)
    for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, *sysconfig.get_paths().values()}
    if p
)


def is_local_path(path: str, root: str) -> bool:
    """Whether ``path`` is the notebook's own code: under ``root`` (a real path: the notebook's directory) and in
    neither the interpreter's folders nor an installed-packages folder. One rule for both sides: the kernel ships
    such modules with a Job (mini_magic.capture) and the worker forgets them after the run (stdlib only, so the
    kernel may import it from here)."""
    real = os.path.realpath(path)
    return (
        real.startswith(root.rstrip(os.sep) + os.sep)
        and not real.startswith(_SYSTEM_PATHS)
        and "site-packages" not in real
        and "dist-packages" not in real
    )


def evict_local_modules(modules: Iterable[ModuleSource], cwd: str | None, before: set[str]) -> None:
    """Drop shipped modules, and modules this run loaded from under the notebook directory, from ``sys.modules``.

    Only names imported during the run (not in ``before``) are examined: earlier local imports were already evicted,
    and resolving the path of every loaded module on every run would cost milliseconds.
    """
    for shipped in modules:
        sys.modules.pop(shipped.name, None)
    imported = [n for n in sys.modules if n not in before]
    if not cwd or not imported:
        return
    root = os.path.realpath(cwd)
    for name in imported:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if not path or name.startswith("mini_magic"):
            continue
        if is_local_path(path, root):
            sys.modules.pop(name, None)
