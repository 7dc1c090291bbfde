"""Kernel side of one run: analyse the cell, build the Job, submit it, drain events, then assign or raise.

Testable without IPython: output goes to an :class:`OutputSink`, results into a plain dict namespace. Events are
drained on the calling thread (the kernel's main thread for a foreground cell), so ``display()`` lands in the running
cell and a kernel interrupt arrives here as KeyboardInterrupt, which is forwarded to this run's worker only.
"""

from __future__ import annotations

import ast
import importlib
import io
import os
import threading
import time
import tokenize
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import wire
from .backends.base import Backend, RunHandle, RunOptions
from .capture import closure_values, imported_modules, local_module_sources, notebook_sources, pack_closure
from .closure import StarImportError, analyze_cell
from .errors import (
    RemoteError,
    RunCancelled,
    RunTimeout,
    ThitherUsageError,
    WorkerCrashed,
    render_remote_traceback,
    warn,
)
from .runs import RunRecord, RunRegistry, RunState


class OutputSink(Protocol):
    """Where a run's output goes (the notebook cell, or a test's list)."""

    def stdout(self, text: str) -> None: ...
    def stderr(self, text: str) -> None: ...
    def display(self, data: dict[str, Any], metadata: dict[str, Any], display_id: str | None, update: bool) -> None: ...
    def clear_output(self, wait: bool) -> None: ...
    def show_value(self, value: Any) -> None: ...
    def show_bundle(self, data: dict[str, Any]) -> None: ...
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


@dataclass
class RunOutcome:
    record: RunRecord
    assigned: list[str]
    deleted: list[str]
    not_returned: dict[str, str]


_CANCEL_REQUESTS: dict[str, threading.Event] = {}


def request_cancel(run_id: str) -> bool:
    """Ask a running foreground run to stop (from a comm handler or another thread). False if it is not running."""
    event = _CANCEL_REQUESTS.get(run_id)
    if event is None:
        return False
    event.set()
    return True


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
) -> RunOutcome:
    """Run one transformed cell body remotely and apply its results to ``namespace`` (only on success)."""
    job = build_job(source, namespace, options, context)
    backend.prepare(options)
    record = registry.create(
        backend=options.backend,
        profile=options.profile(),
        cell_id=context.cell_id,
        msg_id=context.msg_id,
        label=context.label,
        run_id=job.header.run_id,
    )
    cancel = _CANCEL_REQUESTS[record.run_id] = threading.Event()
    try:
        handle = backend.submit(job, options)
        terminal, reason = drain(handle, sink, registry, record.run_id, timeout=options.timeout,
                                 grace=interrupt_grace, cancel=cancel)
    except BaseException as exc:
        registry.finish(record.run_id, RunState.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _CANCEL_REQUESTS.pop(record.run_id, None)
    return settle(terminal, reason, namespace, sink, registry, record.run_id, options)


def build_job(source: str, namespace: dict[str, Any], options: RunOptions, context: CellContext) -> wire.Job:
    """Everything is checked and packed here, before anything runs: errors leave the namespace untouched."""
    offset = context.first_line - 1
    try:
        analysis = analyze_cell(source)
        tree = ast.parse(source)
    except SyntaxError as exc:
        if exc.lineno is not None:
            exc.lineno += offset
        raise
    except StarImportError as exc:
        raise ThitherUsageError(f"%%thither: {exc}") from None
    if analysis.magics:
        uses = ", ".join(f"%{'%' if m.kind == 'cell' else ''}{m.name} (line {m.lineno + offset})" for m in analysis.magics)
        raise ThitherUsageError(
            f"%%thither: IPython magics cannot run in the worker: {uses}. Only !shell commands work inside a "
            "%%thither cell; run the magic in a normal cell."
        )
    values = closure_values(analysis, namespace)
    closure, modules = pack_closure(values)
    run_id = uuid.uuid4().hex[:12]
    count = context.execution_count
    job = wire.Job(
        header=wire.JobHeader(run_id=run_id),
        source=source,
        filename=f"<thither In[{count}]>" if count is not None else f"<thither {run_id}>",
        first_line=context.first_line,
        closure=closure,
        modules=local_module_sources(modules | imported_modules(tree), context.cwd),
        outputs=options.out,
        candidates=(*analysis.writes, *analysis.mutated),
        deleted=analysis.deleted,
        env=dict(options.env),
        cwd=context.cwd,
        linecache=notebook_sources(values.values()),
        display_trailing=analysis.trailing_expression and not ends_with_semicolon(source),
    )
    return job


def ends_with_semicolon(source: str) -> bool:
    """IPython's rule: a trailing ``;`` (comments aside) suppresses the display of the last expression."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
                  if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER,
                                    tokenize.INDENT, tokenize.DEDENT)]
    except (tokenize.TokenError, SyntaxError):
        return False
    return bool(tokens) and tokens[-1].string == ";"


def drain(
    handle: RunHandle,
    sink: OutputSink,
    registry: RunRegistry,
    run_id: str,
    *,
    timeout: float,
    grace: float,
    cancel: threading.Event | None = None,
) -> tuple[wire.Event, str | None]:
    """Dispatch events until a terminal one; returns it and why we stopped the run ourselves, if we did.

    A KeyboardInterrupt (kernel interrupt) asks the worker to stop and kills it after ``grace`` seconds; a second
    interrupt kills it at once. ``timeout`` (0: none) and ``cancel`` stop the run the same way.
    """
    deadline = time.monotonic() + timeout if timeout else None
    reason: str | None = None
    kill_at: float | None = None

    def stop(why: str) -> None:
        nonlocal reason, kill_at
        reason = why
        handle.cancel()
        kill_at = time.monotonic() + grace

    while True:
        try:
            events = handle.next_events(0.1)
            for event in events:
                if event.terminal:
                    sink.flush()
                    return event, reason
                dispatch(event, sink, registry, run_id)
            now = time.monotonic()
            if kill_at is not None and now >= kill_at:
                kill_at = None
                handle.kill()
            elif reason is None and cancel is not None and cancel.is_set():
                stop("cancel")
            elif reason is None and deadline is not None and now >= deadline:
                stop("timeout")
        except KeyboardInterrupt:
            if reason is None or reason != "interrupt":
                stop("interrupt")
            else:
                handle.kill()


def dispatch(event: wire.Event, sink: OutputSink, registry: RunRegistry, run_id: str) -> None:
    if isinstance(event, wire.Stdout):
        sink.stdout(event.text)
    elif isinstance(event, wire.Stderr):
        sink.stderr(event.text)
    elif isinstance(event, wire.Display):
        sink.display(event.data, event.metadata, event.display_id, isinstance(event, wire.UpdateDisplay))
    elif isinstance(event, wire.ClearOutput):
        sink.clear_output(event.wait)
    elif isinstance(event, wire.Started):
        registry.start(run_id, worker_pid=event.pid)


def settle(
    terminal: wire.Event,
    reason: str | None,
    namespace: dict[str, Any],
    sink: OutputSink,
    registry: RunRegistry,
    run_id: str,
    options: RunOptions,
) -> RunOutcome:
    """Assign a successful run's results, or raise what stopped it. The namespace changes only on success."""
    if reason == "interrupt":
        registry.finish(run_id, RunState.CANCELLED, error="KeyboardInterrupt: interrupted")
        exc = KeyboardInterrupt()
        message = "KeyboardInterrupt: the remote run was interrupted; its worker was stopped and nothing was assigned."
        exc._render_traceback_ = lambda: [message]  # type: ignore[attr-defined]
        raise exc
    if reason == "timeout":
        timed_out = RunTimeout(
            f"the cell ran longer than its timeout of {options.timeout:g} s and was stopped; nothing was assigned. "
            "Give it more time with --timeout SECONDS (or %config Thither.timeout)."
        )
        registry.finish(run_id, RunState.FAILED, error=f"RunTimeout: {timed_out}")
        raise timed_out
    if reason == "cancel" or isinstance(terminal, wire.Cancelled):
        why = terminal.reason if isinstance(terminal, wire.Cancelled) else "cancelled"
        registry.finish(run_id, RunState.CANCELLED, error=f"RunCancelled: {why}")
        raise RunCancelled(f"the run was cancelled ({why}); nothing was assigned.")
    if isinstance(terminal, wire.WorkerExited):
        error = WorkerCrashed(describe_exit(terminal.returncode, terminal.log_tail))
        registry.finish(run_id, RunState.FAILED, error=f"WorkerCrashed: {error}")
        raise error
    if isinstance(terminal, wire.Error):
        registry.finish(run_id, RunState.FAILED, error=f"{terminal.type_name}: {terminal.message}")
        raise rebuild_exception(terminal)
    assert isinstance(terminal, wire.Result)
    assigned, deleted, not_returned = apply_result(terminal, namespace)
    record = registry.finish(run_id, RunState.DONE, outputs=assigned)
    if terminal.trailing is not None:
        values = terminal.trailing.unpack(on_error=lambda name, exc: None)
        if "_" in values:
            sink.show_value(values["_"])
    elif terminal.trailing_bundle:
        sink.show_bundle(terminal.trailing_bundle)
    return RunOutcome(record, assigned, deleted, not_returned)


def apply_result(result: wire.Result, namespace: dict[str, Any]) -> tuple[list[str], list[str], dict[str, str]]:
    """Rebuild every output first, then assign them all at once; names that cannot come back are warned about."""
    not_returned = dict(result.unsendable)

    def failed(name: str, exc: BaseException) -> None:
        not_returned[name] = f"it could not be rebuilt in the kernel ({type(exc).__name__}: {exc})"

    values = result.outputs.unpack(on_error=failed)
    for name, value in list(values.items()):
        if isinstance(value, wire.ModuleRef):
            try:
                values[name] = importlib.import_module(value.name)
            except ImportError as exc:
                del values[name]
                failed(name, exc)
    for name in result.deleted:
        namespace.pop(name, None)
    namespace.update(values)
    for name, why in not_returned.items():
        warn(f"{name!r} was not brought back: {why}. The other names were assigned.")
    return list(values), list(result.deleted), not_returned


def rebuild_exception(error: wire.Error) -> BaseException:
    """The remote exception with its own type when that type loads here, else a RemoteError."""
    exc: BaseException | None = None
    if error.exception is not None:
        try:
            exc = error.exception.unpack()["exception"]
        except Exception:  # noqa: BLE001 - fall back to rebuilding from the type name
            exc = None
    if exc is None:
        try:
            cls = getattr(importlib.import_module(error.type_module), error.type_qualname)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                exc = cls(error.message)
        except Exception:  # noqa: BLE001 - the type does not exist here
            exc = None
    if exc is None:
        return RemoteError(error.type_name, error.message, error.traceback)
    lines = render_remote_traceback(error.traceback, f"{error.type_name}: {error.message}")
    try:
        exc._render_traceback_ = lambda: lines  # type: ignore[attr-defined]
    except AttributeError:
        return RemoteError(error.type_name, error.message, error.traceback)
    return exc


_SIGNALS = {4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"}


def describe_exit(returncode: int | None, log_tail: str) -> str:
    """A crash message that says what probably happened and that the next cell gets a fresh worker."""
    if returncode is None:
        what = log_tail or "the worker process is gone"
        return f"the worker failed: {what}. Nothing was assigned."
    if returncode < 0:
        name = _SIGNALS.get(-returncode, f"signal {-returncode}")
        hints = {
            "SIGKILL": " — often the out-of-memory killer: the cell needed more memory than is available",
            "SIGSEGV": " (segmentation fault) — a crash in native code (a C extension or a GPU library)",
            "SIGABRT": " — native code aborted",
        }
        what = f"was killed by {name}{hints.get(name, '')}"
    else:
        what = f"exited with code {returncode}"
    message = f"the worker process running this cell {what}. Nothing was assigned; the next cell gets a fresh worker."
    if log_tail:
        message += "\n--- worker log ---\n" + log_tail[-2000:]
    return message
