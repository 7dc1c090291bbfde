"""Guards as the worker applies them (order, before/after, errors named) and as the kernel registers them."""

from __future__ import annotations

import contextlib

import pytest

from mini_magic import guard
from mini_magic.errors import ThitherUsageError
from mini_magic.guards import for_run, make, named, registered
from mini_magic.worker.guards import GuardFailed, guarded


def recorder():
    log: list[str] = []

    @contextlib.contextmanager
    def wrap(name: str):
        log.append(f"{name} enter")
        try:
            yield
        finally:
            log.append(f"{name} exit")

    return log, wrap


def test_the_first_guard_is_outermost_and_after_sees_the_exception() -> None:
    log, wrap = recorder()
    guards = [make(lambda: wrap("a"), name="a"),
              make(before=lambda: log.append("b before"), after=lambda exc: log.append(f"b after {exc!r}")),
              make(wrap("c"), name="c")]  # a context manager object, used as it is
    with guarded(guards):
        log.append("run")
    assert log == ["a enter", "b before", "c enter", "run", "c exit", "b after None", "a exit"]
    log.clear()
    with pytest.raises(ValueError), guarded(guards[:2]):
        raise ValueError("boom")
    assert log == ["a enter", "b before", "b after ValueError('boom')", "a exit"]


def test_a_guard_that_raises_is_named() -> None:
    def broken():
        raise RuntimeError("no seed")
        yield

    with pytest.raises(GuardFailed, match="guard 'broken' failed before the run: RuntimeError: no seed"), \
            guarded([make(broken)]):
        pytest.fail("the run must not start")
    with pytest.raises(GuardFailed, match=r"guard 'late' failed after the run \(after\(\) raised KeyError"), \
            guarded([make(after=lambda exc: {}["x"], name="late")]):
        pass


def test_registration_order_and_removal() -> None:
    first = guard(before=lambda: None, name="first")
    second = guard(before=lambda: None, name="second")
    try:
        assert [g.name for g in registered()][-2:] == ["first", "second"]
        extra = make(before=lambda: None, name="extra")
        assert [g.name for g in for_run([extra])][-3:] == ["first", "second", "extra"]
    finally:
        first.remove()
        second.remove()
    assert "first" not in [g.name for g in registered()]


def test_bad_guards_are_refused() -> None:
    with pytest.raises(ThitherUsageError, match="not both and not neither"):
        make()
    with pytest.raises(ThitherUsageError, match="takes a function"):
        make(before=3)
    with pytest.raises(ThitherUsageError, match="a guard is a context manager"):
        make(42)
    with pytest.raises(ThitherUsageError, match="--guard nope: no guard named 'nope'"):
        named(["nope"], {})
