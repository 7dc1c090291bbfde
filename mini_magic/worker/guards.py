"""Guards: lifecycle hooks that run in the worker around a run (seeding RNGs, configuring logging, committing a
volume). The kernel side (mini_magic.guards) registers them and ships them with each Job; the runner enters them
around the cell or the call, the first registered outermost. Standard library only: a Guard is unpickled here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


class GuardFailed(RuntimeError):
    """A guard raised while it was being entered or left; the run failed because of it (the guard is named)."""


class Guard:
    """A context manager around each run (``wrap``: a context manager, or a callable that returns a fresh one per
    run, such as a ``@contextmanager`` function), or a ``before()`` / ``after(exception_or_None)`` pair."""

    def __init__(self, name: str, wrap: Any = None, before: Callable[[], Any] | None = None,
                 after: Callable[[BaseException | None], Any] | None = None) -> None:
        self.name = name
        self.wrap = wrap
        self.before = before
        self.after = after

    def __repr__(self) -> str:
        return f"<guard {self.name}>"

    @contextlib.contextmanager
    def around(self) -> Iterator[None]:
        if self.wrap is not None:
            manager = self.wrap if hasattr(self.wrap, "__enter__") else self.wrap()
            with _entered(self, manager):
                yield
            return
        if self.before is not None:
            _call(self, "before", self.before)
        try:
            yield
        except BaseException as exc:
            if self.after is not None:
                _call(self, "after", self.after, exc)
            raise
        if self.after is not None:
            _call(self, "after", self.after, None)


@contextlib.contextmanager
def _entered(guard: Guard, manager: Any) -> Iterator[None]:
    """``with manager:``, an error of the guard's own (entering or leaving; not the run's) named as the guard's."""
    try:
        manager.__enter__()
    except Exception as exc:
        raise GuardFailed(f"guard {guard.name!r} failed before the run: {type(exc).__name__}: {exc}") from exc
    try:
        yield
    except BaseException as exc:
        try:
            suppressed = manager.__exit__(type(exc), exc, exc.__traceback__)
        except Exception as error:
            if error is exc:
                raise
            raise GuardFailed(f"guard {guard.name!r} failed after the run: {type(error).__name__}: {error}") \
                from error
        if not suppressed:
            raise
        return
    try:
        manager.__exit__(None, None, None)
    except Exception as exc:
        raise GuardFailed(f"guard {guard.name!r} failed after the run: {type(exc).__name__}: {exc}") from exc


def _call(guard: Guard, when: str, hook: Callable[..., Any], *args: Any) -> None:
    try:
        hook(*args)
    except Exception as exc:
        raise GuardFailed(f"guard {guard.name!r} failed {when} the run ({when}() raised "
                          f"{type(exc).__name__}: {exc})") from exc


@contextlib.contextmanager
def guarded(guards: list[Guard]) -> Iterator[None]:
    """Every guard around the run, the first outermost (entered first, left last)."""
    with contextlib.ExitStack() as stack:
        for guard in guards:
            stack.enter_context(guard.around())
        yield
