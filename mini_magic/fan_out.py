"""``f.map(...)`` / ``f.starmap(...)``: many calls of a ``@thither`` function at once, as ONE run.

Every item is a call job of its own, through the same session code as any call (start, drain, dispatch, end), and up
to ``Backend.fan_out`` of them are in flight at once (the local pool's worker processes; spawned Modal calls, which
Modal scales out); the next item is submitted as soon as one ends. They are all drained on the calling thread, one
:class:`~mini_magic.session.Drainer` each, so their output, displays and hither callbacks land in the calling cell
and a kernel interrupt stops all of them. Items report to :class:`ItemRecords`, not to the run registry: the
registry, the panel and the lab extension see one run for the map, with its progress (items finished / total),
whatever the number of items.

Items travel in batches (one call job runs several calls: mini_magic.worker.calls.each), about eight batches per
slot in the window and at most :data:`MAX_BATCH` items each, so that many small items do not each pay a job's fixed
cost while slow items still spread evenly over the slots. With ``return_exceptions=True`` every item is a job of its
own, so that each failed item's exception keeps its own remote traceback.

Results come back in input order. The first item that fails stops the map (no item is submitted after it, those in
flight are cancelled) and its error is raised, saying how many items had finished; with ``return_exceptions=True``
every item runs and a failed item's place holds its exception.

Inside a worker the items run in that worker, on threads (mini_magic.worker.threads): it is the remote side.
"""

from __future__ import annotations

import inspect
import threading
import time
from typing import TYPE_CHECKING, Any

from . import session, wire
from .errors import MiniMagicError, ThitherUsageError, explain_interrupt
from .interrupts import InterruptGate
from .jobs import new_run_id
from .progress_mirror import ProgressMirror
from .runs import RunRecord, RunRegistry, RunState
from .session import DelayedPanel, Drainer, abandon, end_run, prepare_job
from .sinks import LineSink
from .worker.calls import ITEM

if TYPE_CHECKING:
    from .functions import ThitherFunction

PROGRESS_EVERY = 0.25  # seconds between updates of the map's record and bar while items finish
BATCHES_PER_SLOT = 8  # more batches: better spread of uneven items; fewer: less fixed cost per item
MAX_BATCH = 256


class ItemRecords:
    """The registry a map's item runs report to: each item's record stays here (out of the run store and the
    status bar); the map's one record in the real registry starts with its first item and counts finished items."""

    def __init__(self, registry: RunRegistry, map_run_id: str, total: int, desc: str) -> None:
        self.registry = registry
        self.run_id = map_run_id
        self.total = total
        self.desc = desc
        self.finished = 0
        self.weights: dict[str, int] = {}  # run id -> how many items its job carries (a batch), when not one
        self._records: dict[str, RunRecord] = {}
        self._lock = threading.Lock()
        self._reported = 0.0
        self._map_started = False

    def create(self, *, backend: str, profile: dict, run_id: str | None = None, label: str | None = None,
               **_: Any) -> RunRecord:
        record = RunRecord(run_id=run_id or new_run_id(), backend=backend, profile=profile, label=label)
        with self._lock:
            self._records[record.run_id] = record
        return record

    def start(self, run_id: str, *, worker_pid: int | None = None, remote_id: str | None = None) -> RunRecord:
        record = self._records[run_id]
        record.state, record.started_at, record.worker_pid = RunState.RUNNING, time.time(), worker_pid
        self.start_map(worker_pid)
        return record

    def start_map(self, worker_pid: int | None = None) -> None:
        if not self._map_started:
            self._map_started = True
            self.registry.start(self.run_id, worker_pid=worker_pid)

    def update(self, run_id: str, **fields: Any) -> RunRecord:
        record = self._records[run_id]
        for name, value in fields.items():
            setattr(record, name, value)
        return record

    def finish(self, run_id: str, state: RunState, *, error: str | None = None,
               outputs: list[str] | None = None) -> RunRecord:
        record = self._records[run_id]
        record.state, record.error, record.finished_at = state, error, time.time()
        self.finished += self.weights.pop(run_id, 1)
        self.report()
        return record

    def get(self, run_id: str) -> RunRecord | None:
        return self._records.get(run_id)

    def report(self, *, final: bool = False) -> None:
        """The map's progress in its record (what the panel and the lab extension show), a few times a second."""
        if final or time.monotonic() - self._reported >= PROGRESS_EVERY:
            self._reported = time.monotonic()
            self.registry.update(self.run_id, progress={"n": self.finished, "total": self.total, "desc": self.desc})


def run_map(function: ThitherFunction, calls: list[tuple[tuple[Any, ...], dict[str, Any]]], *,
            return_exceptions: bool = False) -> list[Any]:
    name = f"{function.__qualname__}.map"
    if inspect.isgeneratorfunction(function.function) or inspect.isasyncgenfunction(function.function):
        raise ThitherUsageError(f"{name}: {function.__qualname__} is a generator function and map() collects "
                                f"return values; iterate {function.__qualname__}(x) for each x, or .spawn(x) them and "
                                "read each call's .stream().")
    if not calls:
        return []
    return _Map(function, calls, return_exceptions).run()


class _Map:
    def __init__(self, function: ThitherFunction, calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
                 return_exceptions: bool) -> None:
        self.function = function
        self.calls = calls
        self.return_exceptions = return_exceptions
        self.total = len(calls)
        self.name = f"{function.__qualname__}.map"
        self.setup = function.setup((), label=f"{self.name}({self.total} items)")
        self.results: list[Any] = [None] * self.total
        self.batches: list[tuple[int, int]] = []  # (first item, item after the last) of each job
        self.failed: tuple[int, BaseException] | None = None
        self.stopping: str | None = None  # why no more items start: error, interrupt, cancel
        self.cancel = threading.Event()
        self.bell = threading.Event()

    def _build(self, gate: InterruptGate) -> list[Any]:
        """Every batch's job before anything runs: an argument that cannot travel is named, with its item."""
        setup = self.setup
        window = max(1, min(setup.backend.fan_out(setup.options), self.total))
        size = 1 if self.return_exceptions else max(1, min(MAX_BATCH, -(-self.total // (window * BATCHES_PER_SLOT))))
        self.batches = [(start, min(start + size, self.total)) for start in range(0, self.total, size)]

        def build_all(keys: tuple[str, ...]) -> list[Any]:
            specs = []
            for start, stop in self.batches:
                try:
                    if stop - start == 1:
                        specs.append(self.function.builder(setup, *self.calls[start])(keys))
                    else:
                        specs.append(self.function.batch_builder(setup, self.calls[start:stop])(keys))
                except MiniMagicError as exc:
                    index, error = self._failing_item(start, stop, keys) if stop - start > 1 else (start, exc)
                    error.args = (f"{self.name}, item {index}: {error}",)
                    raise error from None
            return specs

        return prepare_job(build_all, setup.options, backend=setup.backend, cwd=setup.context.cwd, gate=gate,
                           what=f"{self.name}'s calls")

    def _failing_item(self, start: int, stop: int, keys: tuple[str, ...]) -> tuple[int, MiniMagicError]:
        """Which item of a batch cannot be packed, and its own error naming its argument (each item packed on its
        own, only once its batch failed)."""
        for index in range(start, stop):
            try:
                self.function.builder(self.setup, *self.calls[index])(keys)
            except MiniMagicError as exc:
                return index, exc
        raise AssertionError("a batch failed to pack but none of its items does")

    def run(self) -> list[Any]:
        setup = self.setup
        registry, context = setup.runtime.registry, setup.context
        with InterruptGate() as gate:
            specs: list[Any] = self._build(gate)
            record = registry.create(backend=setup.options.backend, profile=setup.options.profile(),
                                     cell_id=context.cell_id, msg_id=context.msg_id, label=context.label,
                                     run_id=new_run_id(), execution_count=context.execution_count)
            session._GROUPS[record.run_id] = self.cancel
            items = ItemRecords(registry, record.run_id, self.total, self.name)
            bar = ProgressMirror(widgets=context.widgets)
            panel = DelayedPanel(registry, record.run_id, time.monotonic(), show=context.widgets)
            running: dict[int, Drainer] = {}
            try:
                self._drive(gate, specs, running, items, bar, panel)
            except BaseException as exc:
                for drainer in running.values():
                    abandon(drainer.active, exc)
                registry.finish(record.run_id, RunState.FAILED, error=f"{type(exc).__name__}: {exc}")
                raise
            finally:
                session._GROUPS.pop(record.run_id, None)
                bar.close_all()
            self._finish(items)
            panel.finish()
        return self._answer(items)

    def _drive(self, gate: InterruptGate, specs: list[Any], running: dict[int, Drainer], items: ItemRecords,
               bar: ProgressMirror, panel: DelayedPanel) -> None:
        setup = self.setup
        window = max(1, min(setup.backend.fan_out(setup.options), len(self.batches)))
        submitted = 0
        shown = -1.0
        while True:
            try:
                while self.stopping is None and submitted < len(self.batches) and len(running) < window:
                    active = setup.start(specs[submitted], registry=items, sink=LineSink(setup.runtime.sink))
                    specs[submitted] = None  # sent: the kernel no longer needs its packed arguments
                    start, stop = self.batches[submitted]
                    if stop - start > 1:
                        items.weights[active.run_id] = stop - start
                    active.handle.doorbell = self.bell
                    running[submitted] = Drainer(active, grace=setup.grace)
                    submitted += 1
                if not running:
                    return
                self.bell.clear()
                progressed = False
                for index, drainer in list(running.items()):
                    terminal = drainer.step(0, gate)
                    if terminal is not None:
                        progressed = True
                        del running[index]
                        self._ended(index, end_run(drainer.active, terminal, drainer.reason), running)
                if self.stopping is None and self.cancel.is_set():
                    self._stop_all("cancel", running)
                if time.monotonic() - shown >= PROGRESS_EVERY or not running:
                    shown = time.monotonic()
                    items.report(final=not running)
                    bar.update(wire.Progress(seq=0, bar_id="map", n=items.finished, total=self.total,
                                             desc=self.name, unit="item"))
                    panel.tick()
                if not progressed:
                    gate.open()
                    try:
                        self.bell.wait(0.05)
                    finally:
                        gate.close()
            except KeyboardInterrupt:
                if self.stopping != "interrupt":
                    self.stopping = "interrupt"
                for drainer in running.values():
                    drainer.interrupted()  # the first asks each to stop, a second kills them

    def _ended(self, batch: int, outcome: Any, running: dict[int, Drainer]) -> None:
        start, stop = self.batches[batch]
        if outcome.error is None:
            if stop - start == 1:
                self.results[start] = outcome.returned
            else:
                self.results[start:stop] = outcome.returned
            return
        index = start
        if stop - start > 1:  # the batch says which of its calls raised (worker.calls.each)
            index += getattr(outcome.error, ITEM, 0)
            try:
                delattr(outcome.error, ITEM)
            except AttributeError:
                pass
        self.results[index] = outcome.error
        if self.stopping is None and not self.return_exceptions:
            self.failed = (index, outcome.error)
            self._stop_all("error", running)

    def _stop_all(self, why: str, running: dict[int, Drainer]) -> None:
        self.stopping = why
        for drainer in running.values():
            if drainer.reason is None:
                drainer.stop("cancel")

    def _finish(self, items: ItemRecords) -> None:
        registry, run_id = items.registry, items.run_id  # items.report(final=True) ran as the last item ended
        if self.stopping in ("interrupt", "cancel"):
            state, error = RunState.CANCELLED, f"{self.stopping}ed after {items.finished} of {self.total} items"
        elif self.failed is not None:
            index, exc = self.failed
            state, error = RunState.FAILED, f"item {index}: {type(exc).__name__}: {exc}"
        else:
            state, error = RunState.DONE, None
        if state is not RunState.CANCELLED:
            items.start_map()  # every item may have failed before it started
        registry.finish(run_id, state, error=error)

    def _answer(self, items: ItemRecords) -> list[Any]:
        done = sum(1 for r in self.results if r is not None and not isinstance(r, BaseException))
        if self.stopping in ("interrupt", "cancel"):
            why = "interrupted" if self.stopping == "interrupt" else "cancelled"
            message = (f"{self.name} was {why}: {items.finished} of {self.total} items had finished; the others "
                       "were stopped and nothing was returned.")
            if self.stopping == "interrupt":
                raise explain_interrupt(KeyboardInterrupt(), message)
            from .errors import RunCancelled

            raise RunCancelled(message)
        if self.failed is not None:
            index, exc = self.failed
            _add_note(exc, f"{self.name}: item {index} failed; {done} of {self.total} items had finished and the "
                           "others were stopped. Pass return_exceptions=True to run every item and get each "
                           "result or exception in its place.")
            raise exc
        return self.results


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(note)
