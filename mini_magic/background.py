"""``%%thither --bg``: a run that returns at once, drains its events on its own thread, and renders only into its
own panel (output, displays, mirrored bars and its callbacks' prints), never into whichever cell is executing.

Other cells stay usable meanwhile; several background runs can be active at once; a kernel interrupt reaches only
the main thread's cell, never these runs (their workers are in their own process sessions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import RunCancelled, explain_interrupt, explain_missing_name
from .interrupts import InterruptGate
from .jobs import CellContext, JobSpec, build_job
from .outcome import Outcome, assign
from .routing import ROUTE, install
from .runs import RegistryClosed, RunRecord, RunState
from .session import ActiveRun, abandon, drain, end_run, prepare_job, request_cancel, start_run
from .sinks import OutputSink, PanelSink, StreamSink, TerminalSink
from .ui import RunPanel, describe

_TICK = 0.5


class Run:
    """Handle of a background run: ``state``, ``elapsed``, ``wait()``, ``result()``, ``cancel()``, ``assign()``."""

    announce_end = True  # without a panel, say on the terminal how the run ended (the prompt has moved on)

    def __init__(self, active: ActiveRun, panel: RunPanel | None, namespace: dict[str, Any], name: str | None,
                 grace: float) -> None:
        """``panel`` is None in a terminal IPython, where the run writes to the terminal (:class:`TerminalSink`)."""
        self._active = active
        self._panel = panel
        self._namespace = namespace
        self.name = name
        self.run_id = active.run_id
        self._grace = grace
        self._outcome: Outcome | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._drain, name=f"mini-magic-bg-{self.run_id}", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        panel = self._panel
        if panel is not None:
            ROUTE.set(panel.output)  # this thread's (and its async callbacks') prints go to the panel
        last_tick = 0.0

        def tick() -> None:
            nonlocal last_tick
            if panel is not None and time.monotonic() - last_tick >= _TICK:
                last_tick = time.monotonic()
                panel.update(self.record)

        try:
            terminal, reason = drain(self._active, grace=self._grace, on_tick=tick)
            self._outcome = end_run(self._active, terminal, reason)
        except RegistryClosed:
            self._outcome = self._ended_by_close()
        except BaseException as exc:  # noqa: BLE001 - the drainer must record every ending
            abandon(self._active, exc)
            self._outcome = Outcome(RunState.FAILED, exc)
        error = self._outcome.error
        if error is not None:
            if self._active.job.header.kind == "cell":  # its hint is about a cell's names (--in)
                explain_missing_name(error, self._namespace, self._active.job.closure.names)  # in place: result() too
            self._active.sink.stderr(_error_text(error))
        elif self._outcome.trailing:
            self._active.sink.show_value(self._outcome.trailing[0], self._outcome.trailing_bundle,
                                         self._outcome.trailing_metadata)
        elif self._outcome.trailing_bundle:
            self._active.sink.show_bundle(self._outcome.trailing_bundle, self._outcome.trailing_metadata)
        if panel is not None:
            panel.update(self.record)
        elif self.announce_end:
            self._active.sink.stderr(f"background run {self.label}: {describe(self.record)}\n")
        self._done.set()

    def _ended_by_close(self) -> Outcome:
        """The extension closed under this run (kernel shutdown or restart, ``%unload_ext``) and its registry has
        ended the record with the reason: stop what is left of the run, recording nothing more. A detached run is
        left running (only this kernel stopped following it; ``%thither attach`` picks it up again)."""
        record = self.record
        error = RunCancelled(f"{record.error or 'the extension was closed'}; nothing was assigned.")
        if not record.detached:
            with contextlib.suppress(RegistryClosed):
                abandon(self._active, error)
        return Outcome(RunState.CANCELLED, error)

    @property
    def record(self) -> RunRecord:
        return self._active.record

    @property
    def state(self) -> str:
        """queued, running, done, failed or cancelled."""
        return self.record.state.value

    @property
    def elapsed(self) -> float | None:
        return self.record.elapsed

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ended (True) or ``timeout`` seconds passed (False)."""
        return self._done.wait(timeout)

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The names the run assigned, as a dict; raises the run's error if it failed."""
        if not self.wait(timeout):
            raise TimeoutError(f"background run {self.label} is still {self.state}")
        assert self._outcome is not None
        if self._outcome.error is not None:
            raise self._outcome.error
        return dict(self._outcome.values)

    def assign(self, namespace: dict[str, Any] | None = None) -> list[str]:
        """Put the run's results into the notebook namespace (waits for the run); returns the names assigned."""
        values = self.result()
        assert self._outcome is not None
        assign(self._outcome, self._namespace if namespace is None else namespace)
        return list(values)

    def cancel(self) -> None:
        """Stop the run (its worker gets SIGINT, then SIGKILL after the grace period)."""
        self._active.cancel.set()

    @property
    def label(self) -> str:
        return repr(self.name) if self.name else self.run_id

    def __repr__(self) -> str:
        elapsed = self.elapsed
        took = f", {elapsed:.1f} s" if elapsed is not None else ""
        return f"<thither background run {self.label}: {self.state}{took}>"


def _error_text(error: BaseException) -> str:
    render = getattr(error, "_render_traceback_", None)
    if callable(render):
        return "\n".join(render()) + "\n"
    return f"{type(error).__name__}: {error}\n"


def start_background(source: str, namespace: dict[str, Any], options: Any, *, shell: Any, backend: Any,
                     registry: Any, context: CellContext, name: str | None, grace: float) -> Run:
    """Submit a ``%%thither --bg`` cell and display its panel in the current cell (on the main thread)."""
    context = dataclasses.replace(context, background=True)
    return start_background_job(lambda secret_keys: build_job(source, namespace, options, context, secret_keys),
                                options, shell=shell, backend=backend, registry=registry, context=context, name=name,
                                grace=grace)


def start_background_job(build: Callable[[tuple[str, ...]], JobSpec], options: Any, *, shell: Any, backend: Any,
                         registry: Any, context: CellContext, name: str | None, grace: float,
                         handle: type[Run] = Run) -> Run:
    """Submit any job as a background run (a ``--bg`` cell, a ``.spawn`` call): its panel shows in the current cell
    where widgets can render, else its output goes to the terminal (``shell`` None: a plain script's stdout).

    An interrupt of the cell while the run is being started cancels that run (its drainer still ends its record)
    and is raised once the run has its handle, so nothing is left without an owner.
    """
    context = dataclasses.replace(context, background=True)
    run: Run | None = None
    try:
        with InterruptGate() as gate:
            spec = prepare_job(build, options, backend=backend, cwd=context.cwd, gate=gate)
            if not context.widgets:
                sink: OutputSink = TerminalSink(shell) if shell is not None else StreamSink()
                active = start_run(spec, options, backend=backend, registry=registry, sink=sink, context=context)
                run = handle(active, None, spec.namespace, name, grace)
            else:
                run = _start_with_panel(spec, options, shell=shell, backend=backend, registry=registry,
                                        context=context, name=name, grace=grace, handle=handle)
            if gate.held:
                run.cancel()
    except KeyboardInterrupt as exc:
        if run is None:
            raise
        raise explain_interrupt(exc, f"the background run {run.run_id} was cancelled as it started.") from None
    return run


def _start_with_panel(spec: JobSpec, options: Any, *, shell: Any, backend: Any, registry: Any, context: CellContext,
                      name: str | None, grace: float, handle: type[Run]) -> Run:
    import ipywidgets

    install(shell)
    output = ipywidgets.Output()
    sink: OutputSink = PanelSink(output, shell)
    holder: dict[str, Any] = {}

    def attach(bar: Any) -> None:
        holder["panel"].attach(bar)

    active = start_run(spec, options, backend=backend, registry=registry, sink=sink, context=context, attach=attach)
    try:
        panel = RunPanel(active.record, on_cancel=lambda: request_cancel(active.run_id), background=True,
                         output=output)
        holder["panel"] = panel
        panel.show()
    except BaseException as exc:
        abandon(active, exc)
        raise
    return handle(active, panel, spec.namespace, name, grace)
