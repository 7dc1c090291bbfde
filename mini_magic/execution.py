"""Kernel side of one run: analyse the cell, build the Job, submit it, drain its events, then assign or raise.

Testable without IPython: output goes to an :class:`OutputSink`, results into a plain dict namespace. A foreground
cell drains on the calling thread (the kernel's main thread), so ``display()`` and hither callbacks land in the
running cell and a kernel interrupt arrives here as KeyboardInterrupt, which is forwarded to this run's worker only.
Background runs (see background.py) use the same pieces on a drainer thread.
"""

from __future__ import annotations

import ast
import io
import os
import threading
import time
import tokenize
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import library_settings, wire
from .backends.base import Backend, RunHandle, RunOptions
from .capture import closure_values, imported_modules, local_module_sources, notebook_sources, pack_closure
from .closure import StarImportError, analyze_cell
from .errors import ThitherUsageError, explain_interrupt, explain_missing_name, warn
from .callbacks import HitherSession
from .interrupts import InterruptGate
from .outcome import Outcome, assign, interpret
from .placeholder import NOT_SENT
from .progress_mirror import ProgressMirror
from .runs import RunRecord, RunRegistry, RunState

PANEL_DELAY = 0.5  # a foreground run shows its panel only once it has run this long


class OutputSink(Protocol):
    """Where a run's output goes (the notebook cell, a background run's panel, or a test's list)."""

    def stdout(self, text: str) -> None: ...
    def stderr(self, text: str) -> None: ...
    def display(self, data: dict[str, Any], metadata: dict[str, Any], display_id: str | None, update: bool) -> None: ...
    def clear_output(self, wait: bool) -> None: ...
    def show_value(self, value: Any, data: dict[str, Any] | None = None,
                   metadata: dict[str, Any] | None = None) -> None: ...
    def show_bundle(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None: ...
    def flush(self) -> None: ...


@dataclass(frozen=True)
class CellContext:
    """Where the cell comes from: recorded with the run so the UI can find the cell again."""

    cell_id: str | None = None
    msg_id: str | None = None
    execution_count: int | None = None
    cwd: str = field(default_factory=os.getcwd)
    first_line: int = 2  # the body of a %%thither cell starts on the cell's second line
    label: str | None = None
    hither_interval: float = 0.02  # the backend's batching interval for hither calls
    background: bool = False  # a --bg run: never the kernel's foreground cell, so never stopped by an interrupt
    widgets: bool = True  # False in a terminal IPython (no kernel): no panel, text progress bars


@dataclass
class RunOutcome:
    record: RunRecord
    assigned: list[str]
    deleted: list[str]
    not_returned: dict[str, str]


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


def request_cancel(run_id: str) -> bool:
    """Ask an active run to stop (from a comm handler, a button, another thread). False if it is not active."""
    active = _ACTIVE.get(run_id)
    if active is None:
        return False
    active.cancel.set()
    return True


def build_job(source: str, namespace: dict[str, Any], options: RunOptions, context: CellContext,
              secret_keys: tuple[str, ...] = ()) -> tuple[wire.Job, dict[str, Any], dict[str, Any]]:
    """Check and pack everything before anything runs (errors leave the namespace untouched). Also returns the
    hither objects the closure references, by reference id, and every value sent, by name (results may refer
    back to them: see mini_magic.worker_inputs)."""
    offset = context.first_line - 1
    try:
        analysis = analyze_cell(source)
        tree = ast.parse(source)
    except SyntaxError as exc:
        if exc.lineno is not None:
            exc.lineno += offset
        if context.execution_count is not None:  # named like the cell's code in tracebacks, not <unknown>
            exc.filename = f"<thither In[{context.execution_count}]>"
        raise
    except StarImportError as exc:
        raise ThitherUsageError(f"%%thither: {exc}") from None
    if analysis.magics:
        uses = ", ".join(f"%{'%' if m.kind == 'cell' else ''}{m.name} (line {m.lineno + offset})" for m in analysis.magics)
        raise ThitherUsageError(
            f"%%thither: IPython magics cannot run in the worker: {uses}. Only !shell commands work inside a "
            "%%thither cell; run the magic in a normal cell."
        )
    values = closure_values(analysis, namespace, options.inputs, returned=options.out)
    packed = pack_closure(values, namespace)
    run_id = uuid.uuid4().hex[:12]
    count = context.execution_count
    job = wire.Job(
        header=wire.JobHeader(run_id=run_id),
        source=source,
        filename=f"<thither In[{count}]>" if count is not None else f"<thither {run_id}>",
        first_line=context.first_line,
        closure=packed.values,
        modules=local_module_sources(packed.modules | imported_modules(tree), context.cwd),
        outputs=options.out,
        candidates=tuple(n for n in (*analysis.writes, *analysis.mutated) if values.get(n) is not NOT_SENT),
        deleted=analysis.deleted,
        env=dict(options.env),
        cwd=context.cwd,
        linecache=notebook_sources(values.values()),
        display_trailing=analysis.trailing_expression and not ends_with_semicolon(source),
        hither_interval=context.hither_interval if packed.hithers else None,
        secret_keys=secret_keys,
        return_known=not options.extra.get("detach"),  # another kernel may read a detached run's result
        settings=library_settings.capture(),
    )
    return job, packed.hithers, packed.sent


def ends_with_semicolon(source: str) -> bool:
    """IPython's rule: a trailing ``;`` (comments aside) suppresses the display of the last expression."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
                  if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER,
                                    tokenize.INDENT, tokenize.DEDENT)]
    except (tokenize.TokenError, SyntaxError):
        return False
    return bool(tokens) and tokens[-1].string == ";"


def start_run(
    source: str,
    namespace: dict[str, Any],
    options: RunOptions,
    *,
    backend: Backend,
    registry: RunRegistry,
    sink: OutputSink,
    context: CellContext,
    attach: Callable[[Any], None] | None = None,
    gate: InterruptGate | None = None,
) -> ActiveRun:
    """Build, record, enter the run's hither context managers, and submit. Returns at once.

    Building the job has no side effect, so ``gate`` (held closed by the caller) lets an interrupt stop it; from the
    record's creation on the run exists, and only its drain may turn an interrupt into a cancel.
    """
    backend.prepare(options)
    gate = gate or InterruptGate()
    gate.open()
    try:
        job, hither_refs, sent = build_job(source, namespace, options, context,
                                           backend.secret_keys(options, context.cwd))
    except KeyboardInterrupt as exc:
        raise explain_interrupt(exc, "interrupted while the cell was being prepared; nothing ran.") from None
    finally:
        gate.close()
    record = registry.create(backend=options.backend, profile=options.profile(), cell_id=context.cell_id,
                             msg_id=context.msg_id, label=context.label, run_id=job.header.run_id,
                             background=context.background, execution_count=context.execution_count)
    hithers = HitherSession(hither_refs, report=sink.stderr)
    handle: RunHandle | None = None
    try:
        hithers.enter()
        handle = backend.submit(job, options)
        if handle.remote_id:
            registry.update(record.run_id, remote_id=handle.remote_id)
        active = ActiveRun(record.run_id, job, options, registry, handle, sink, hithers,
                           ProgressMirror(attach, widgets=context.widgets), namespace, sent)
    except BaseException as exc:
        if handle is not None:
            handle.kill()
        hithers.exit(exc)
        registry.finish(record.run_id, RunState.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    _ACTIVE[record.run_id] = active
    return active


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
    handle = active.handle
    timeout = active.options.timeout
    deadline = active.started + timeout if timeout else None
    reason: str | None = None
    kill_at: float | None = None
    pending: deque[wire.Event] = deque()

    def stop(why: str) -> None:
        nonlocal reason, kill_at
        reason = why
        handle.cancel()
        kill_at = time.monotonic() + grace

    while True:
        try:
            if not pending:
                gate.open()
                try:
                    handle.wait(0.1)
                finally:
                    gate.close()
                pending.extend(handle.next_events(0))
            while pending:
                if pending[0].terminal:
                    active.sink.flush()
                    return pending.popleft(), reason
                event = pending.popleft()
                if isinstance(event, wire.HitherCalls):  # user code: the user may need to stop it
                    gate.open()
                try:
                    dispatch(event, active)
                finally:
                    gate.close()
            now = time.monotonic()
            if kill_at is not None and now >= kill_at:
                kill_at = None
                handle.kill()
            elif reason is None and active.cancel.is_set():
                stop("cancel")
            elif reason is None and deadline is not None and now >= deadline:
                stop("timeout")
            if on_tick is not None:
                on_tick()
        except KeyboardInterrupt:  # raised where the gate was open; raising closed it
            if reason != "interrupt":
                stop("interrupt")
            else:
                handle.kill()


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
    elif isinstance(event, wire.Progress):
        active.progress.update(event)
        active.record_progress(event)
    elif isinstance(event, wire.Started):
        active.registry.start(active.run_id, worker_pid=event.pid)


def end_run(active: ActiveRun, terminal: wire.Event, reason: str | None) -> Outcome:
    """Interpret the terminal event, then tear down: hither context managers exit after the final drain (also on
    error or interrupt), bars the run left open close, and the registry records the end."""
    try:
        outcome = interpret(terminal, reason, active.options, home=active.namespace, known=active.sent)
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
        active.registry.finish(active.run_id, outcome.state, error=outcome.summary, outputs=list(outcome.values))
    return outcome


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
    """Run one transformed cell body remotely (foreground) and apply its results to ``namespace`` on success.

    From the run's creation to the assignment of its results, interrupts are held except where the drain can turn
    them into a cancel (see mini_magic.interrupts): whenever the interrupt lands, no worker is left waiting, no record
    is left unfinished, and the record says ``done`` exactly when the names were assigned. An interrupt that arrives
    after the result is raised once the names are assigned.
    """
    result: RunOutcome | None = None
    try:
        with InterruptGate() as gate:
            result = _run_foreground(source, namespace, options, backend=backend, registry=registry, sink=sink,
                                     context=context, interrupt_grace=interrupt_grace, show_panel=show_panel,
                                     gate=gate)
    except KeyboardInterrupt as exc:
        if result is None:
            raise
        raise explain_interrupt(exc, "the run had finished and its results were assigned when the interrupt "
                                     "arrived.") from None
    return result


def _run_foreground(source: str, namespace: dict[str, Any], options: RunOptions, *, backend: Backend,
                    registry: RunRegistry, sink: OutputSink, context: CellContext, interrupt_grace: float,
                    show_panel: bool, gate: InterruptGate) -> RunOutcome:
    active = start_run(source, namespace, options, backend=backend, registry=registry, sink=sink,
                       context=context, gate=gate)
    panel: Any = None

    def tick() -> None:
        nonlocal panel
        if panel is None and show_panel and context.widgets and time.monotonic() - active.started >= PANEL_DELAY:
            from .ui import RunPanel

            panel = RunPanel(active.record, on_cancel=lambda: request_cancel(active.run_id), background=False)
            panel.show()
        elif panel is not None:
            panel.update(active.record)

    try:
        terminal, reason = drain(active, grace=interrupt_grace, on_tick=tick, gate=gate)
    except BaseException as exc:
        abandon(active, exc)
        raise
    outcome = end_run(active, terminal, reason)
    if panel is not None:
        panel.update(active.record)
    if outcome.error is not None:
        raise explain_missing_name(outcome.error, namespace, active.job.closure.names)
    assign(outcome, namespace)
    for name, why in outcome.not_returned.items():
        warn(f"{name!r} was not brought back: {why}. The other names were assigned.")
    if outcome.trailing:  # shown as the worker formatted it, where the cell ran
        sink.show_value(outcome.trailing[0], outcome.trailing_bundle, outcome.trailing_metadata)
    elif outcome.trailing_bundle:
        sink.show_bundle(outcome.trailing_bundle, outcome.trailing_metadata)
    return RunOutcome(active.record, list(outcome.values), outcome.deleted, outcome.not_returned)
