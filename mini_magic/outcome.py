"""What a finished run amounts to: the values to assign, or the exception to raise, and its registry state.

Kept apart from how the events were drained, so a foreground cell (raise or assign now) and a background run
(keep it for ``Run.result()``/``Run.assign()``) share one interpretation of every terminal event.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Any

from . import figure_formats, library_settings, module_return, wire
from .options import RunOptions
from .errors import RemoteError, RemoteTraceback, RunCancelled, RunFailed, RunTimeout, WorkerCrashed, render_remote_traceback
from .runs import RunState


@dataclass
class Outcome:
    state: RunState
    error: BaseException | None = None
    values: dict[str, Any] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    not_returned: dict[str, str] = field(default_factory=dict)
    trailing: tuple[Any, ...] = ()  # (value,) when a trailing expression's value came back
    trailing_bundle: dict[str, Any] | None = None  # how the worker displays the trailing value: what the cell shows
    trailing_metadata: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # library settings the cell changed (library_settings)
    returned: Any = None  # a call job's return value (a call assigns no names: ``values`` stays empty)

    @property
    def summary(self) -> str | None:
        """One line for the run registry."""
        if self.error is None:
            return None
        return f"{type(self.error).__name__}: {self.error}"


def interpret(terminal: wire.Event, reason: str | None, options: RunOptions, *,
              home: dict[str, Any] | None = None, known: dict[str, Any] | None = None, kind: str = "cell") -> Outcome:
    """``reason`` is why the kernel stopped the run itself ('interrupt', 'timeout', 'cancel'), if it did.
    ``home``: the notebook namespace (functions the cell defined live in it); ``known``: the values the run was
    sent, by name (unchanged ones come back as these objects). See mini_magic.namespace_pickling. ``kind``: the
    job's (wire.JobHeader.kind); a call's Result is its return value."""
    if reason == "interrupt":
        interrupted = KeyboardInterrupt("the remote run was interrupted")
        message = "KeyboardInterrupt: the remote run was interrupted; its worker was stopped and nothing was assigned."
        interrupted._render_traceback_ = lambda: [message]  # type: ignore[attr-defined]
        return Outcome(RunState.CANCELLED, interrupted)
    if reason == "timeout":
        if kind == "call":
            return Outcome(RunState.FAILED, RunTimeout(
                f"the call ran longer than its timeout of {options.timeout:g} s and was stopped. Give it more time "
                "with @thither(timeout=SECONDS) (or %config Thither.timeout)."))
        return Outcome(RunState.FAILED, RunTimeout(
            f"the cell ran longer than its timeout of {options.timeout:g} s and was stopped; nothing was assigned. "
            "Give it more time with --timeout SECONDS (or %config Thither.timeout)."
        ))
    if reason == "cancel" or isinstance(terminal, wire.Cancelled):
        why = terminal.reason if isinstance(terminal, wire.Cancelled) else "cancelled"
        nothing = "nothing was returned" if kind == "call" else "nothing was assigned"
        return Outcome(RunState.CANCELLED, RunCancelled(f"the run was cancelled ({why}); {nothing}."))
    if isinstance(terminal, wire.WorkerExited):
        return Outcome(RunState.FAILED, WorkerCrashed(describe_exit(terminal.returncode, terminal.log_tail)))
    if isinstance(terminal, wire.Error):
        return Outcome(RunState.FAILED, rebuild_exception(terminal))
    assert isinstance(terminal, wire.Result)
    outcome = _result(terminal, home, known)
    return _returned(outcome) if kind == "call" else outcome


def _returned(outcome: Outcome) -> Outcome:
    """A call's Result holds one name, its return value. One that could not come back fails the call: unlike a
    cell's names, whose others are still assigned, a call has nothing else to give its caller."""
    if wire.RETURN in outcome.not_returned:
        return Outcome(RunState.FAILED, RunFailed(
            f"the function ran, but its return value could not be brought back: {outcome.not_returned[wire.RETURN]}. "
            "Return something that pickles (or write the result to a file or volume)."))
    return Outcome(RunState.DONE, returned=outcome.values.get(wire.RETURN))


def _result(result: wire.Result, home: dict[str, Any] | None, known: dict[str, Any] | None) -> Outcome:
    """Rebuild every output (nothing is assigned here); names that cannot come back are listed with the reason."""
    not_returned = dict(result.unsendable)

    def failed(name: str, exc: BaseException) -> None:
        not_returned[name] = f"it could not be rebuilt in the kernel ({type(exc).__name__}: {exc})"

    values = result.outputs.unpack(on_error=failed, home=home, known=known)
    values = {name: module_return.rebuild(value) for name, value in values.items()}  # modules: lazily, by name
    trailing: tuple[Any, ...] = ()
    if result.trailing is not None:
        value = result.trailing.unpack(on_error=lambda name, exc: None, home=home, known=known)
        trailing = (value["_"],) if "_" in value else ()
    if "matplotlib.figure" in sys.modules:  # a Figure may have come back: let it render here as it did there
        figure_formats.enable_here()
    return Outcome(RunState.DONE, None, values, list(result.deleted), not_returned, trailing, result.trailing_bundle,
                   result.trailing_metadata, result.settings)


def assign(outcome: Outcome, namespace: dict[str, Any]) -> None:
    """All names at once, after success: deletions first, then the new values; and the library settings the cell
    changed (library_settings: set here as the cell would have, kept for later runs where not imported here)."""
    for name in outcome.deleted:
        namespace.pop(name, None)
    namespace.update(outcome.values)
    library_settings.apply(outcome.settings, import_missing=False)


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
    if exc.__cause__ is None and error.traceback:
        exc.__cause__ = RemoteTraceback(error.traceback)
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
