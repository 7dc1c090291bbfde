"""Worker side: tqdm progress bars become Progress events, mirrored as notebook bars in the run's cell.

No code change is needed in the cell: ``tqdm(...)``, ``trange``, ``tqdm.auto.tqdm`` and a ``tqdm`` class captured from
the notebook (there usually ``tqdm.notebook.tqdm``, which cannot draw in a worker) all resolve to one mirrored class.
tqdm is patched lazily, by an import hook, so a worker that never imports tqdm pays nothing.

A loop over a bar runs no Python code per item (:mod:`.counted_iteration`): the bar's count is read by a watcher
thread, which sends an update when the count moved and ``mininterval`` (0.1 s by default, at least
:data:`POLL_INTERVAL`) has passed; ``bar.n`` is exact at any time, from any thread. Updates made by hand
(``bar.update``) redraw as in tqdm. Either way a bar sends at most about ten events per second, plus its final state
on close. A bar finds the run it belongs to through :mod:`.context`, from whatever thread updates it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import io
import itertools
import sys
import threading
from types import ModuleType
from typing import Any

from ..wire import Progress
from . import context
from .counted_iteration import Watcher, counted

POLL_INTERVAL = 0.1
_ids = itertools.count(1)
_mirror: type | None = None
_watcher = Watcher(POLL_INTERVAL, start_thread=context.service_thread)


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
            self._mm_base = 0  # the count, less what the loop in progress has done
            self._mm_produced: Any = None  # how many items that loop has handed out, while a loop runs
            self._mm_sent_n: Any = None
            self._mm_lock = threading.Lock()  # one sender at a time: the final state is sent last
            super().__init__(*args, **kwargs)

        # As in tqdm, an item counts once the loop body has finished with it (the one in hand does not).
        @property  # type: ignore[override]
        def n(self) -> Any:
            return self._mm_base + self._mm_done()

        @n.setter
        def n(self, value: Any) -> None:
            self._mm_base = value - self._mm_done()

        def _mm_done(self) -> int:
            produced = self._mm_produced
            return 0 if produced is None else max(produced() - 1, 0)

        def __iter__(self) -> Any:
            if self.disable or self.iterable is None:
                return super().__iter__()
            iterator, self._mm_produced = counted(self.iterable, self._mm_loop_ended)
            _watcher.watch(self)
            return iterator

        def _mm_loop_ended(self, exhausted: bool) -> None:
            _watcher.unwatch(self)
            produced = self._mm_produced
            if produced is not None:
                self._mm_base += produced() if exhausted else max(produced() - 1, 0)
                self._mm_produced = None
            self.close()

        def poll(self) -> None:
            """Called by the watcher thread while a loop runs: send the count if it moved and it is time."""
            if self._mm_produced is None or self.n == self._mm_sent_n:
                return
            now = self._time()
            if now - self.last_print_t >= self.mininterval and now >= self.start_t + self.delay:
                self.last_print_t = now
                self.display()

        def display(self, msg: Any = None, pos: Any = None) -> bool:
            with self._mm_lock:
                if not self._mm_closed:
                    self._mm_sent_n = self.n
                    _send(self, closed=False)
            return True

        def close(self) -> None:
            if self._mm_closed or getattr(self, "disable", True):
                return
            _watcher.unwatch(self)
            with self._mm_lock:
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
