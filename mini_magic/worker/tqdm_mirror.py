"""Worker side: tqdm progress bars become Progress events, mirrored as notebook bars in the run's cell.

No code change is needed in the cell: ``tqdm(...)``, ``trange``, ``tqdm.auto.tqdm`` and a ``tqdm`` class captured from
the notebook (there usually ``tqdm.notebook.tqdm``, which cannot draw in a worker) all resolve to one mirrored class.
tqdm is patched lazily, by an import hook, so a worker that never imports tqdm pays nothing. Redraws are tqdm's own
(``mininterval``, 0.1 s by default): at most about ten events per second per bar, plus the final state on close.
A bar finds the run it belongs to through :mod:`.context`, from whatever thread updates it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import io
import itertools
import sys
from types import ModuleType
from typing import Any

from ..wire import Progress
from . import context

_ids = itertools.count(1)
_mirror: type | None = None


def _send(bar: Any, closed: bool) -> None:
    run = context.current()  # the same run from any thread the cell started
    if run is None:
        context.report_outside_run(f"tqdm:{bar._mm_id}", f"the progress bar {str(bar.desc or bar._mm_id)!r} is not "
                                   "shown: no run is active in this process (a thread that outlived its cell?).")
        return
    run.sync()  # what the cell printed, and the callbacks it made, before this bar's update
    run.emit(
        Progress,
        bar_id=bar._mm_id,
        n=bar.n,
        total=bar.total,
        desc=str(bar.desc or ""),
        unit=str(bar.unit),
        postfix=str(bar.postfix or ""),
        leave=bar.leave is not False,
        closed=closed,
    )


def _make_mirror(base: type) -> type:
    class MirroredTqdm(base):  # type: ignore[misc, valid-type]
        """A tqdm whose display is an event to the kernel instead of text on stderr."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["file"] = io.StringIO()  # never draw in the worker's (captured) stderr
            for notebook_only in ("display", "gui"):
                kwargs.pop(notebook_only, None)
            self._mm_id = f"bar-{next(_ids)}"
            self._mm_closed = False
            super().__init__(*args, **kwargs)

        def display(self, msg: Any = None, pos: Any = None) -> bool:
            _send(self, closed=False)
            return True

        def close(self) -> None:
            if self._mm_closed or getattr(self, "disable", True):
                return
            self._mm_closed = True
            super().close()
            _send(self, closed=True)

    # Pickled by reference as tqdm.std.tqdm (which this class replaces in the worker), never by value.
    MirroredTqdm.__name__ = MirroredTqdm.__qualname__ = "tqdm"
    MirroredTqdm.__module__ = "tqdm.std"
    return MirroredTqdm


def _trange(*args: Any, **kwargs: Any) -> Any:
    assert _mirror is not None
    return _mirror(range(*args), **kwargs)


def _patch(module: ModuleType) -> None:
    global _mirror
    if module.__name__ == "tqdm.std":
        _mirror = _make_mirror(getattr(module, "tqdm"))
        setattr(module, "tqdm", _mirror)  # std.trange looks the name up at call time
        return
    if _mirror is None:
        return
    for name in ("tqdm", "tqdm_notebook"):
        if hasattr(module, name):
            setattr(module, name, _mirror)
    for name in ("trange", "tnrange"):
        if hasattr(module, name):
            setattr(module, name, _trange)


# tqdm.auto and tqdm.asyncio build their classes on top of these, so they inherit the mirroring.
_TARGETS = ("tqdm", "tqdm.std", "tqdm.notebook", "tqdm.autonotebook")


class _PatchAfterExec(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _patch(module)


class _TqdmHook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchAfterExec(spec.loader)
        return spec


def install() -> None:
    """Mirror tqdm from now on (modules already imported are patched at once)."""
    for name in ("tqdm.std", "tqdm.notebook", "tqdm.autonotebook", "tqdm"):  # std first: the others reuse its class
        if name in sys.modules:
            _patch(sys.modules[name])
    sys.meta_path.insert(0, _TqdmHook())
