"""``guard``: register lifecycle hooks that run in the worker around runs (mi-ni's ``@run.guard``).

Three places, one order (the first registered is outermost: entered first, left last):

1. global guards, ``guard(cm)`` / ``@guard``: around every run of this process (cells and calls), in the order
   they were registered; ``g.remove()`` unregisters one;
2. a function's, ``@thither(guards=[...])``;
3. a cell's, ``%%thither --guard NAME`` (a guard, or a context manager factory, the notebook defines).

A guard is a context manager (``@guard`` on a generator function makes it one, as ``@contextmanager`` does; a
class or an object with ``__enter__`` works as is) or a ``before()`` / ``after(exception_or_None)`` pair. It travels
with every Job like the closure (a notebook function by value, with the globals it reads); the worker enters it
around the run (mini_magic.worker.guards). A guard that raises fails the run with the guard named.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from .worker.guards import Guard

# Copy-on-write, no lock: the list is read while a job is built, where a kernel interrupt may land on any line,
# and an interrupt between taking a lock and entering its block would leave it taken for every later run.
_REGISTERED: tuple[Guard, ...] = ()


class RegisteredGuard(Guard):
    """A global guard: ``remove()`` unregisters it."""

    def remove(self) -> None:
        global _REGISTERED
        _REGISTERED = tuple(g for g in _REGISTERED if g is not self)


def guard(wrap: Any = None, /, *, before: Callable[[], Any] | None = None,
          after: Callable[[BaseException | None], Any] | None = None, name: str | None = None) -> RegisteredGuard:
    """Register a guard around every later run: ``guard(cm)``, ``@guard`` on a generator function (code before
    its ``yield`` runs before the run, after it after), or ``guard(before=..., after=...)``."""
    made = make(wrap, before=before, after=after, name=name, kind=RegisteredGuard)
    assert isinstance(made, RegisteredGuard)
    global _REGISTERED
    _REGISTERED = (*_REGISTERED, made)
    return made


def make(wrap: Any = None, *, before: Callable[[], Any] | None = None,
         after: Callable[[BaseException | None], Any] | None = None, name: str | None = None,
         kind: type[Guard] = Guard) -> Guard:
    """A guard from what the user gave (not registered); a clear error for anything else."""
    from .errors import ThitherUsageError

    if isinstance(wrap, Guard) and before is None and after is None:
        return wrap
    if (wrap is None) == (before is None and after is None):
        raise ThitherUsageError("a guard is a context manager (guard(cm), @guard on a generator function) or a "
                                "before/after pair (guard(before=f, after=g)), not both and not neither.")
    for hook, label in ((before, "before"), (after, "after")):
        if hook is not None and not callable(hook):
            raise ThitherUsageError(f"guard({label}=...) takes a function, not {type(hook).__name__}.")
    if wrap is not None:
        if inspect.isgeneratorfunction(wrap):
            import contextlib

            wrap = contextlib.contextmanager(wrap)
        elif not (hasattr(wrap, "__enter__") or callable(wrap)):
            raise ThitherUsageError(f"guard({type(wrap).__name__}): a guard is a context manager or a function "
                                    "that returns one (e.g. a generator function with one yield).")
    label = name or getattr(wrap, "__name__", None) or getattr(before or after, "__name__", None) \
        or type(wrap).__name__
    return kind(label, wrap, before, after)


def registered() -> list[Guard]:
    """The global guards, first registered first."""
    return list(_REGISTERED)


def for_run(extra: Iterable[Any] = ()) -> list[Guard]:
    """The guards of one run: the global ones, then the function's or the cell's."""
    return [*registered(), *(make(g) for g in extra)]


def named(names: Iterable[str], namespace: dict[str, Any]) -> list[Guard]:
    """``--guard NAME``: each name looked up in the notebook namespace."""
    from .errors import ThitherUsageError

    guards = []
    for name in names:
        if name not in namespace:
            raise ThitherUsageError(f"--guard {name}: no guard named {name!r} in the notebook; define it first, e.g. "
                                    f"a generator function with one yield, or {name} = guard(before=..., after=...).")
        guards.append(make(namespace[name], name=name))
    return guards
