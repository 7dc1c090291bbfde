"""Kernel side of one run, whatever the job: start it, drain its events, dispatch them, end it.

The session takes a built job (a :class:`mini_magic.jobs.JobSpec`) and never looks at where it came from, so a cell
and any other kind of job share start, drain, dispatch, end, cancel, progress and registry code. Testable without
IPython: output goes to an :class:`mini_magic.sinks.OutputSink`, results into a plain dict namespace. A foreground
run drains on the calling thread (the kernel's main thread), so ``display()`` and hither callbacks land in the
running cell and a kernel interrupt arrives here as KeyboardInterrupt, which is forwarded to this run's worker only.
Background runs (see background.py) use the same pieces on a drainer thread.

A call job's generator items arrive as ``Yield`` events, each handed to the run's ``on_yield`` as it arrives (on the
draining thread: a foreground caller sees item 0 while the generator still runs), or, with no ``on_yield``, put on
``ActiveRun.yielded``, a queue another thread can read while the run goes on.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import wire
from .backends.base import Backend, RunHandle
from .callbacks import HitherSession
from .errors import explain_interrupt, explain_missing_name, warn
from .interrupts import InterruptGate
from .jobs import CellContext, JobSpec, build_job
from .options import RunOptions
from .outcome import Outcome, assign, interpret
from .progress_mirror import ProgressMirror
from .runs import RunRecord, RunRegistry, RunState
from .sinks import OutputSink

PANEL_DELAY = 0.5  # a foreground run shows its panel only once it has run this long


@dataclass
class RunOutcome:
    record: RunRecord
    assigned: list[str]
    deleted: list[str]
    not_returned: dict[str, str]
    returned: Any = None  # a call job's return value
    yielded: list[Any] = field(default_factory=list)  # a call's generator items, when no on_yield took them


@dataclass
class ActiveRun:
    """A submitted run as the kernel side tracks it until its terminal event."""

    run_id: str
    job: wire.Job
    options: RunOptions
    registry: RunRegistry
    handle: RunHandle
    sink: OutputSink
    hithers: HitherSession
    progress: ProgressMirror
    namespace: dict[str, Any]  # the notebook's: functions that come back live in it
    sent: dict[str, Any]  # the values sent, by name: unchanged ones come back as these very objects
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    progress_recorded: float = 0.0  # monotonic time the registry last got this run's progress
    progress_pending: dict[str, Any] | None = None  # the newest progress the registry has not got yet
    on_yield: Callable[[Any], None] | None = None  # takes each item a called generator yields, as it arrives
    yielded: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)  # the items, when on_yield is None

    def record_progress(self, event: wire.Progress, every: float = 1.0) -> None:
        """Keep the registry's progress summary (what the lab extension shows) current, at most once a second."""
        self.progress_pending = {"n": event.n, "total": event.total, "desc": event.desc}
        if time.monotonic() - self.progress_recorded >= every:
            self.flush_progress()

    def flush_progress(self) -> None:
        """Record the newest progress now (at the end of the run, so the final count is kept)."""
        if self.progress_pending is not None:
            self.progress_recorded = time.monotonic()
            self.registry.update(self.run_id, progress=self.progress_pending)
            self.progress_pending = None

    @property
    def record(self) -> RunRecord:
        record = self.registry.get(self.run_id)
        assert record is not None
        return record


_ACTIVE: dict[str, ActiveRun] = {}


_GROUPS: dict[str, threading.Event] = {}  # runs made of several runs (a .map): their cancel, by run id


def request_cancel(run_id: str) -> bool:
    """Ask an active run to stop (from a comm handler, a button, another thread). False if it is not active."""
    active = _ACTIVE.get(run_id)
    cancel = active.cancel if active is not None else _GROUPS.get(run_id)
    if cancel is None:
        return False
    cancel.set()
    return True


class DelayedPanel:
    """A foreground run's panel in the cell, shown once the run has gone on for ``PANEL_DELAY`` seconds (a quick
    run shows none) and updated on every :meth:`tick` after that."""

    def __init__(self, registry: Any, run_id: str, started: float, *, show: bool) -> None:
        self.registry = registry
        self.run_id = run_id
        self.started = started
        self.show = show
        self.panel: Any = None

    def tick(self) -> None:
        # The record is read (a copy) only when there is a panel to show or update: most runs end before.
        if self.panel is None and not (self.show and time.monotonic() - self.started >= PANEL_DELAY):
            return
        record = self.registry.get(self.run_id)
        if record is None:
            return
        if self.panel is None:
            from .ui import RunPanel

            self.panel = RunPanel(record, on_cancel=lambda: request_cancel(self.run_id), background=False)
            self.panel.show()
        else:
            self.panel.update(record)

    def finish(self) -> None:
        """The run ended: a panel already shown gets its final state; none is shown now."""
        if self.panel is not None:
            record = self.registry.get(self.run_id)
            if record is not None:
                self.panel.update(record)


def prepare_job(build: Callable[[tuple[str, ...]], Any], options: RunOptions, *, backend: Backend, cwd: str,
                gate: InterruptGate, what: str = "the cell") -> Any:
    """Validate the options with the backend, then build the job (``build`` gets the backend's secret keys; a
    ``.map`` builds all its items' jobs at once, ``what`` names them in the interrupt message).

    Building has no side effect, so ``gate`` (held closed by the caller) lets an interrupt stop it; from the record's
    creation on (:func:`start_run`) the run exists, and only its drain may turn an interrupt into a cancel.
    """
    backend.prepare(options)
    gate.open()
    try:
        return build(backend.secret_keys(options, cwd))
    except KeyboardInterrupt as exc:
        raise explain_interrupt(exc, f"interrupted while {what} was being prepared; nothing ran.") from None
    finally:
        gate.close()


def start_run(
    spec: JobSpec,
    options: RunOptions,
    *,
    backend: Backend,
    registry: RunRegistry,
    sink: OutputSink,
    context: CellContext,
    attach: Callable[[Any], None] | None = None,
    on_yield: Callable[[Any], None] | None = None,
) -> ActiveRun:
    """Record the built job, enter its hither context managers, and submit it. Returns at once."""
    job = spec.job
    record = registry.create(backend=options.backend, profile=options.profile(), cell_id=context.cell_id,
                             msg_id=context.msg_id, label=context.label, run_id=job.header.run_id,
                             background=context.background, execution_count=context.execution_count)
    hithers = HitherSession(spec.hithers, report=sink.stderr)
    handle: RunHandle | None = None
    try:
        hithers.enter()
        handle = backend.submit(job, options)
        if handle.remote_id:
            registry.update(record.run_id, remote_id=handle.remote_id)
        active = ActiveRun(record.run_id, job, options, registry, handle, sink, hithers,
                           ProgressMirror(attach, widgets=context.widgets), spec.namespace, spec.sent,
                           on_yield=on_yield)
    except BaseException as exc:
        if handle is not None:
            handle.kill()
        hithers.exit(exc)
        registry.finish(record.run_id, RunState.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    _ACTIVE[record.run_id] = active
    return active


class Drainer:
    """One run's drain, a step at a time: :func:`drain` loops over it for one run; a caller that drains several runs
    on one thread (a ``.map``) or between awaits (an ``async def`` function) steps each in turn.

    A step waits up to ``wait`` seconds for events with ``gate`` open (see :func:`drain`), dispatches them, and
    stops the run on its cancel or timeout, killing it ``grace`` seconds later. It returns the terminal event once
    it is there. :meth:`interrupted` is what a KeyboardInterrupt caught around a step does: ask the worker to stop,
    and on a second one kill it.
    """

    def __init__(self, active: ActiveRun, *, grace: float) -> None:
        self.active = active
        self.grace = grace
        timeout = active.options.timeout
        self.deadline = active.started + timeout if timeout else None
        self.reason: str | None = None
        self.kill_at: float | None = None
        self.pending: deque[wire.Event] = deque()

    def stop(self, why: str) -> None:
        """Ask the run to stop (``why``: interrupt, cancel, timeout); it is killed ``grace`` seconds later."""
        self.reason = why
        self.active.handle.cancel()
        self.kill_at = time.monotonic() + self.grace

    def interrupted(self) -> None:
        if self.reason != "interrupt":
            self.stop("interrupt")
        else:
            self.active.handle.kill()

    def step(self, wait: float, gate: InterruptGate) -> wire.Event | None:
        active, handle, pending = self.active, self.active.handle, self.pending
        if not pending:
            if wait > 0:
                gate.open()
                try:
                    handle.wait(wait)
                finally:
                    gate.close()
            pending.extend(handle.next_events(0))
        while pending:
            if pending[0].terminal:
                active.sink.flush()
                return pending.popleft()
            event = pending.popleft()
            if isinstance(event, (wire.HitherCalls, wire.Yield)):  # user code: the user may need to stop it
                gate.open()
            try:
                dispatch(event, active)
            finally:
                gate.close()
        now = time.monotonic()
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            handle.kill()
        elif self.reason is None and active.cancel.is_set():
            self.stop("cancel")
        elif self.reason is None and self.deadline is not None and now >= self.deadline:
            self.stop("timeout")
        return None


def drain(active: ActiveRun, *, grace: float, on_tick: Callable[[], None] | None = None,
          gate: InterruptGate | None = None) -> tuple[wire.Event, str | None]:
    """Dispatch events until a terminal one; returns it and why we stopped the run ourselves, if we did.

    A KeyboardInterrupt (kernel interrupt) asks the worker to stop and kills it after ``grace`` seconds; a second
    interrupt kills it at once. The run's timeout (0: none) and ``active.cancel`` stop it the same way.

    ``gate`` (a foreground run, on the kernel's main thread) lets interrupts in only while waiting for events and
    while hither callbacks (user code) run: events are taken off the handle with interrupts held and kept in
    ``pending`` until handled, so none is ever lost (a lost terminal event would hang the cell). It is closed when
    the terminal event is returned.
    """
    gate = gate or InterruptGate()  # off the main thread (a background run's drainer) it does nothing
    drainer = Drainer(active, grace=grace)
    while True:
        try:
            terminal = drainer.step(0.1, gate)
            if terminal is not None:
                return terminal, drainer.reason
            if on_tick is not None:
                on_tick()
        except KeyboardInterrupt:  # raised where the gate was open; raising closed it
            drainer.interrupted()


def dispatch(event: wire.Event, active: ActiveRun) -> None:
    sink = active.sink
    if isinstance(event, wire.Stdout):
        sink.stdout(event.text)
    elif isinstance(event, wire.Stderr):
        sink.stderr(event.text)
    elif isinstance(event, wire.Display):
        sink.display(event.data, event.metadata, event.display_id, isinstance(event, wire.UpdateDisplay))
    elif isinstance(event, wire.ClearOutput):
        sink.clear_output(event.wait)
    elif isinstance(event, wire.HitherCalls):
        calls = event.calls.unpack(on_error=lambda name, exc: sink.stderr(
            f"hither: a batch of calls could not be rebuilt here and was dropped ({type(exc).__name__}: {exc})\n"))
        active.hithers.dispatch(calls.get("calls", ()))
    elif isinstance(event, wire.Yield):
        item = event.value.unpack(home=active.namespace, known=active.sent)["item"]
        if active.on_yield is not None:
            active.on_yield(item)  # a caller that raises stops the run, as breaking out of a local loop would
        else:
            active.yielded.put(item)
    elif isinstance(event, wire.Progress):
        active.progress.update(event)
        active.record_progress(event)
    elif isinstance(event, wire.Started):
        active.registry.start(active.run_id, worker_pid=event.pid)


def end_run(active: ActiveRun, terminal: wire.Event, reason: str | None) -> Outcome:
    """Interpret the terminal event, then tear down: hither context managers exit after the final drain (also on
    error or interrupt), bars the run left open close, and the registry records the end."""
    try:
        outcome = interpret(terminal, reason, active.options, home=active.namespace, known=active.sent,
                            kind=active.job.header.kind)
    except BaseException as exc:  # noqa: BLE001 - a broken result still ends the run cleanly
        outcome = Outcome(RunState.FAILED, exc)
    try:
        active.flush_progress()
        active.hithers.exit(outcome.error)
        active.progress.close_all()
        summary = active.hithers.summary()
        if summary:
            active.sink.stderr(summary)
    finally:
        _ACTIVE.pop(active.run_id, None)
        _record_end(active.registry, active.run_id, outcome)
    return outcome


def wait_detached(handle: RunHandle, record: RunRecord, registry: RunRegistry) -> Outcome:
    """The ending of a detached run this kernel follows again (``%thither attach``; maybe started by an earlier
    kernel): wait for its terminal event and record it as :func:`end_run` does. Its live output is not replayed, and
    a kernel interrupt stops the waiting, never the run. A record that already holds its ending keeps it and only
    gains the names the run returned."""
    terminal = None
    while terminal is None:
        terminal = next((e for e in handle.next_events(0.5) if e.terminal), None)
    outcome = interpret(terminal, None, RunOptions(backend=record.backend))
    if record.state.terminal:
        registry.update(record.run_id, outputs=list(outcome.values))
        return outcome
    if record.state is RunState.QUEUED:
        registry.start(record.run_id)
    _record_end(registry, record.run_id, outcome)
    return outcome


def _record_end(registry: RunRegistry, run_id: str, outcome: Outcome) -> None:
    registry.finish(run_id, outcome.state, error=outcome.summary, outputs=list(outcome.values))


def abandon(active: ActiveRun, exc: BaseException) -> None:
    """The kernel side failed while draining (not the run): stop the run and record why."""
    active.handle.kill()
    active.hithers.exit(exc)
    active.progress.close_all()
    _ACTIVE.pop(active.run_id, None)
    active.registry.finish(active.run_id, RunState.FAILED, error=f"{type(exc).__name__}: {exc}")


def run_cell(
    source: str,
    namespace: dict[str, Any],
    options: RunOptions,
    *,
    backend: Backend,
    registry: RunRegistry,
    sink: OutputSink,
    context: CellContext,
    interrupt_grace: float = 1.0,
    show_panel: bool = True,
) -> RunOutcome:
    """Run one transformed cell body remotely (foreground) and apply its results to ``namespace`` on success."""
    return run_foreground(lambda secret_keys: build_job(source, namespace, options, context, secret_keys), options,
                          backend=backend, registry=registry, sink=sink, context=context,
                          interrupt_grace=interrupt_grace, show_panel=show_panel)


def run_foreground(
    build: Callable[[tuple[str, ...]], JobSpec],
    options: RunOptions,
    *,
    backend: Backend,
    registry: RunRegistry,
    sink: OutputSink,
    context: CellContext,
    interrupt_grace: float = 1.0,
    show_panel: bool = True,
    on_yield: Callable[[Any], None] | None = None,
) -> RunOutcome:
    """Build the job (see :func:`prepare_job`), run it, and apply its results to its namespace on success (a call
    job's return value is in ``RunOutcome.returned``; its generator's items go to ``on_yield`` as they arrive, or
    into ``RunOutcome.yielded``).

    From the run's creation to the assignment of its results, interrupts are held except where the drain can turn
    them into a cancel (see mini_magic.interrupts): whenever the interrupt lands, no worker is left waiting, no record
    is left unfinished, and the record says ``done`` exactly when the names were assigned. An interrupt that arrives
    after the result is raised once the names are assigned.
    """
    result: RunOutcome | None = None
    try:
        with InterruptGate() as gate:
            result = _run_foreground(build, options, backend=backend, registry=registry, sink=sink,
                                     context=context, interrupt_grace=interrupt_grace, show_panel=show_panel,
                                     gate=gate, on_yield=on_yield)
    except KeyboardInterrupt as exc:
        if result is None:
            raise
        raise explain_interrupt(exc, "the run had finished and its results were assigned when the interrupt "
                                     "arrived.") from None
    return result


def _run_foreground(build: Callable[[tuple[str, ...]], JobSpec], options: RunOptions, *, backend: Backend,
                    registry: RunRegistry, sink: OutputSink, context: CellContext, interrupt_grace: float,
                    show_panel: bool, gate: InterruptGate, on_yield: Callable[[Any], None] | None) -> RunOutcome:
    spec = prepare_job(build, options, backend=backend, cwd=context.cwd, gate=gate)
    active = start_run(spec, options, backend=backend, registry=registry, sink=sink, context=context,
                       on_yield=on_yield)
    namespace = spec.namespace
    panel = DelayedPanel(active.registry, active.run_id, active.started, show=show_panel and context.widgets)
    try:
        terminal, reason = drain(active, grace=interrupt_grace, on_tick=panel.tick, gate=gate)
    except BaseException as exc:
        abandon(active, exc)
        raise
    outcome = end_run(active, terminal, reason)
    panel.finish()
    if outcome.error is not None:
        if active.job.header.kind == "cell":  # its hint is about a cell's names (--in)
            raise explain_missing_name(outcome.error, namespace, active.job.closure.names)
        raise outcome.error
    assign(outcome, namespace)
    for name, why in outcome.not_returned.items():
        warn(f"{name!r} was not brought back: {why}. The other names were assigned.")
    if outcome.trailing:  # shown as the worker formatted it, where the cell ran
        sink.show_value(outcome.trailing[0], outcome.trailing_bundle, outcome.trailing_metadata)
    elif outcome.trailing_bundle:
        sink.show_bundle(outcome.trailing_bundle, outcome.trailing_metadata)
    yielded = []
    while not active.yielded.empty():
        yielded.append(active.yielded.get())
    return RunOutcome(active.record, list(outcome.values), outcome.deleted, outcome.not_returned, outcome.returned,
                      yielded)
