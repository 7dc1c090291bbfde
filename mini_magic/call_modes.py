"""How a ``@thither`` function's call runs (mini_magic.functions): blocking, awaited, streamed or spawned, each
through the run session like a cell (see the functions module's docstring)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .background import Run, start_background_job
from .errors import ThitherUsageError
from .interrupts import InterruptGate
from .jobs import CellContext, JobSpec
from .options import RunOptions
from .session import ActiveRun, DelayedPanel, Drainer, abandon, end_run, prepare_job, run_foreground, start_run

if TYPE_CHECKING:
    from .functions import ThitherFunction

ASYNC_POLL = (0.001, 0.02)  # seconds between an awaited call's polls: first, and at most (it doubles while idle)


def spawn(function: ThitherFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FunctionCall:
    setup = function.setup(args)
    call = start_background_job(function.builder(setup, args, kwargs), setup.options, shell=setup.runtime.shell,
                                backend=setup.backend, registry=setup.runtime.registry, context=setup.context,
                                name=None, grace=setup.grace, handle=FunctionCall)
    assert isinstance(call, FunctionCall)
    return call


def blocking(function: ThitherFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    setup = function.setup(args)
    outcome = run_foreground(function.builder(setup, args, kwargs), setup.options, backend=setup.backend,
                             registry=setup.runtime.registry, sink=setup.runtime.sink, context=setup.context,
                             interrupt_grace=setup.grace)
    return outcome.returned


async def awaited(function: ThitherFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Drained between awaits on the event loop's thread, so ``asyncio.gather`` of calls runs them at once and
    their output still lands in the calling cell. A cancelled task cancels the run."""
    setup = function.setup(args)
    with InterruptGate() as gate:
        spec = prepare_job(function.builder(setup, args, kwargs), setup.options, backend=setup.backend,
                           cwd=setup.context.cwd, gate=gate)
        active = setup.start(spec)
        if gate.take_held():  # the interrupt came while the run was being started: it stops the run
            active.cancel.set()
    drainer, idle = Drainer(active, grace=setup.grace), InterruptGate()  # never entered: lets nothing in
    cancelled: BaseException | None = None
    terminal = None
    pause = ASYNC_POLL[0]
    while terminal is None:
        try:
            terminal = drainer.step(0, idle)
            if terminal is None:
                await asyncio.sleep(pause)
                pause = min(pause * 2, ASYNC_POLL[1])
        except asyncio.CancelledError as exc:
            cancelled = exc
            drainer.interrupted() if drainer.reason is not None else drainer.stop("cancel")
        except KeyboardInterrupt:
            drainer.interrupted()
        except BaseException as exc:
            abandon(active, exc)
            raise
    outcome = end_run(active, terminal, drainer.reason)
    if cancelled is not None:
        raise cancelled
    if outcome.error is not None:
        raise outcome.error
    return outcome.returned


class CallSetup:
    """What one call of a ``@thither`` function runs with (see :meth:`ThitherFunction.setup`)."""

    def __init__(self, runtime: Any, options: RunOptions, backend: Any, context: CellContext, grace: float) -> None:
        self.runtime = runtime
        self.options = options
        self.backend = backend
        self.context = context
        self.grace = grace

    def start(self, spec: JobSpec, on_yield: Callable[[Any], None] | None = None, *, registry: Any = None,
              sink: Any = None) -> ActiveRun:
        return start_run(spec, self.options, backend=self.backend, registry=registry or self.runtime.registry,
                         sink=sink or self.runtime.sink, context=self.context, on_yield=on_yield)


class RemoteGenerator:
    """The call of a ``@thither`` generator function: iterating it starts the run and yields each item as the
    worker produces it (the first while later ones are still being computed); its ``return`` value ends the
    iteration as ``StopIteration.value``. Stopping early (``break``, ``close()``, the generator dropped) cancels the
    run, as it would close a local generator. A stream is consumed once: iterating it again once it has ended is
    an error, not a silent empty loop."""

    def __init__(self, function: ThitherFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._function = function
        self._stream = _stream(function, args, kwargs)
        self._ended = False

    def __iter__(self) -> RemoteGenerator:
        if self._ended:
            name = self._function.__qualname__
            raise ThitherUsageError(f"this {name}(...) stream was already consumed: a remote generator runs once; "
                                    f"call {name}(...) again to run it again.")
        return self

    def __next__(self) -> Any:
        try:
            return next(self._stream)
        except BaseException:
            self._ended = True
            raise

    def close(self) -> None:
        """Stop the run now if it is still going (what ``break`` out of the loop does)."""
        self._ended = True
        self._stream.close()

    def __repr__(self) -> str:
        return f"<thither stream {self._function.__qualname__}: {'ended' if self._ended else 'open'}>"


def _stream(function: ThitherFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
    setup = function.setup(args)
    items: deque[Any] = deque()
    active: ActiveRun | None = None
    drainer: Drainer | None = None
    terminal = None
    ended = False
    panel: DelayedPanel | None = None
    try:
        while True:
            with InterruptGate() as gate:
                if active is None:
                    spec = prepare_job(function.builder(setup, args, kwargs), setup.options, backend=setup.backend,
                                       cwd=setup.context.cwd, gate=gate)
                    active = setup.start(spec, items.append)
                    drainer = Drainer(active, grace=setup.grace)
                    panel = DelayedPanel(active.registry, active.run_id, active.started,
                                         show=setup.context.widgets)
                assert drainer is not None and panel is not None
                while not items and terminal is None:
                    try:
                        terminal = drainer.step(0.1, gate)
                        panel.tick()
                    except KeyboardInterrupt:
                        drainer.interrupted()
            if items:
                yield items.popleft()
                continue
            ended = True
            outcome = end_run(active, terminal, drainer.reason)
            panel.finish()
            if outcome.error is not None:
                raise outcome.error
            return outcome.returned
    finally:
        if active is not None and drainer is not None and not ended:
            _stop(active, drainer, terminal)


def _stop(active: ActiveRun, drainer: Drainer, terminal: Any) -> None:
    """A stream left before its end: cancel the run, wait for its end (a second interrupt kills it), record it."""
    with InterruptGate() as gate:
        if terminal is None and drainer.reason is None:
            drainer.stop("cancel")
        while terminal is None:
            try:
                terminal = drainer.step(0.1, gate)
            except KeyboardInterrupt:
                active.handle.kill()
        end_run(active, terminal, drainer.reason)


class FunctionCall(Run):
    """A spawned call (``f.spawn(...)``): ``result(timeout=None)`` its return value, ``stream()`` a generator's
    items, ``cancel()``, ``state``, ``wait()``. Its output goes to its own panel in the cell that spawned it (to the
    terminal without widgets), as a ``%%thither --bg`` run's does."""

    _streamed = False
    announce_end = False  # its caller asks for the result; a script's output stays the call's own

    def result(self, timeout: float | None = None) -> Any:  # type: ignore[override]
        """The return value (a generator's ``return`` value); raises the call's error, ``RunCancelled`` once it
        was cancelled, ``TimeoutError`` if it is still running after ``timeout`` seconds."""
        if not self.wait(timeout):
            raise TimeoutError(f"the call {self.label} is still {self.state} after {timeout} s")
        assert self._outcome is not None
        if self._outcome.error is not None:
            raise self._outcome.error
        return self._outcome.returned

    def stream(self) -> Iterator[Any]:
        """A generator call's items, as they arrive (items yielded before this was called included). Once."""
        if self._streamed:
            raise ThitherUsageError(f"call {self.label}: .stream() was already consumed; a call's items stream once.")
        self._streamed = True
        return self._items()

    def _items(self) -> Iterator[Any]:
        from .worker.threads import items_until

        yield from items_until(self._active.yielded, self.done, self.wait)
        self.result()  # the call's error, if it failed

    def assign(self, namespace: dict[str, Any] | None = None) -> list[str]:  # type: ignore[override]
        raise ThitherUsageError("a call assigns no names: use .result() for its return value.")

    @property
    def label(self) -> str:
        return self.record.label or self.run_id

    def __repr__(self) -> str:
        elapsed = self.elapsed
        took = f", {elapsed:.1f} s" if elapsed is not None else ""
        return f"<thither call {self.label}: {self.state}{took}>"


