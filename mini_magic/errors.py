"""The exceptions mini_magic raises, rooted at :class:`MiniMagicError`.

::

    MiniMagicError
     ├── ThitherUsageError      bad option / cell that cannot run remotely (raised before anything runs)
     │    └── CaptureError      a captured value cannot travel to the worker
     ├── ProtocolMismatch       local and remote speak different wire versions / Pythons / cloudpickles
     ├── RunFailed              the run did not produce a result
     │    ├── WorkerCrashed     the worker process died (exit code or signal is in the message)
     │    ├── RunTimeout        ``--timeout`` elapsed
     │    └── RunCancelled      cancelled from the UI / API
     └── RemoteError           the cell raised an exception whose type cannot be rebuilt locally

Exceptions raised *by the cell* are re-raised locally with their own type when it can be imported here; only
otherwise do they become :class:`RemoteError`. Every error message names the side that failed and the fix.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from IPython.core.error import UsageError


class MiniMagicError(Exception):
    """Base class of every error mini_magic raises itself.

    The notebook shows only the message: the kernel-side frames that raised it say nothing a user can act on.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class ThitherUsageError(MiniMagicError, UsageError):
    """The cell or its options cannot run remotely; raised before anything runs, namespace untouched.

    It subclasses IPython's ``UsageError`` so a notebook shows the message without a Python traceback.
    """


class CaptureError(ThitherUsageError):
    """A value the cell reads cannot be sent to the worker."""

    def __init__(self, name: str, type_name: str, reason: str, fix: str) -> None:
        self.name = name
        self.type_name = type_name
        self.reason = reason
        self.fix = fix
        if name.startswith(("args[", "kwargs[")):  # a call's argument (wire.call_values names them so)
            fix = fix.replace("inside the cell", "inside the function")
            message = f"cannot send argument {name} ({type_name}) to the worker: {reason}. {fix} Nothing ran."
        else:
            message = (f"cannot send variable {name!r} ({type_name}) to the worker: {reason}. {fix} "
                       "Nothing ran and the notebook namespace is unchanged.")
        super().__init__(message)


class RemoteTraceback(Exception):
    """The worker's traceback, as the ``__cause__`` of a rebuilt remote exception: what a plain Python traceback
    (a script, a test) shows above the exception; IPython shows the exception's own rendering instead."""

    def __init__(self, text: str) -> None:
        super().__init__(text)

    def __str__(self) -> str:
        return "\n" + str(self.args[0]).rstrip("\n")


class ProtocolMismatch(MiniMagicError):
    """The Job's header does not match what the worker speaks (checked before anything is unpickled)."""


class RunFailed(MiniMagicError):
    """The run ended without a result."""


class WorkerCrashed(RunFailed):
    """The worker process died while running the cell."""


class RunTimeout(RunFailed):
    """The run exceeded its ``--timeout``."""


class RunCancelled(RunFailed):
    """The run was cancelled before it finished; nothing was assigned."""


class RemoteError(MiniMagicError):
    """An exception raised by the cell remotely whose type cannot be rebuilt in the kernel.

    ``type_name`` is the remote exception's qualified type name; ``remote_traceback`` its formatted traceback
    (frames point at the cell's own lines). IPython calls :meth:`_render_traceback_` to show it.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        super().__init__(f"{type_name}: {message}" if message else type_name)

    def _render_traceback_(self) -> list[str]:
        return render_remote_traceback(self.remote_traceback, f"{self.type_name}: {self.message}")


def render_remote_traceback(remote_traceback: str, summary: str) -> list[str]:
    """Lines IPython shows for an exception that happened in the worker."""
    lines = ["\x1b[31m--- remote traceback (thither worker) ---\x1b[0m"]
    lines.extend(remote_traceback.rstrip("\n").splitlines() or [summary])
    return lines


_UNDEFINED = re.compile(r"(?:name|variable) '([^']+)' is not defined")  # NameError's and pandas' wording


def explain_missing_name(error: BaseException, notebook: Mapping[str, Any], sent: Iterable[str]) -> BaseException:
    """Add the fix to a remote ``NameError`` (or pandas' ``UndefinedVariableError``) for a name that the notebook
    defines but that was not sent: the cell used it where the closure analysis could not see it (a string built at
    run time, ``globals()[...]``), and ``--in`` sends it. Returns ``error``, changed in place; any other error, or a
    name the notebook lacks too, is returned unchanged.

    The hint goes where the notebook shows it: the remote traceback (``_render_traceback_``) and, on Python 3.11+,
    the exception's notes.
    """
    type_name = error.type_name if isinstance(error, RemoteError) else type(error).__name__
    message = error.message if isinstance(error, RemoteError) else str(error)
    if not (isinstance(error, NameError) or type_name.rpartition(".")[2] in ("NameError", "UndefinedVariableError")):
        return error
    match = _UNDEFINED.search(message)
    name = match.group(1) if match else None
    if name is None or name not in notebook or name in set(sent) or getattr(error, "_mini_magic_hint", False):
        return error
    hint = (f"{name!r} exists in the notebook, but the cell's code did not mention it where %%thither's analysis "
            f"could see it (e.g. inside a string), so it was not sent to the worker; pass it explicitly: "
            f"%%thither --in {name}")
    render = getattr(error, "_render_traceback_", None)
    lines = list(render()) if callable(render) else [f"{type_name}: {message}"]
    try:
        error._render_traceback_ = lambda: [*lines, f"\x1b[33mHint\x1b[0m: {hint}"]  # type: ignore[attr-defined]
        error._mini_magic_hint = True  # type: ignore[attr-defined]
    except AttributeError:  # an exception type with __slots__: leave it as it is
        return error
    if hasattr(error, "add_note"):
        error.add_note(f"Hint: {hint}")
    return error


def explain_interrupt(exc: KeyboardInterrupt, what: str) -> KeyboardInterrupt:
    """Give an interrupt that stopped mini_magic's own code one line saying what it left, instead of a traceback of
    mini_magic's frames; an interrupt that already says so keeps its words."""
    if getattr(exc, "_render_traceback_", None) is None:
        exc._render_traceback_ = lambda: [f"KeyboardInterrupt: {what}"]  # type: ignore[attr-defined]
    return exc


class ThitherWarning(UserWarning):
    """A run went ahead, but not exactly as asked (e.g. a value could not come back, no local GPU)."""


# Each message names its own variable or option; repeats must not be swallowed by the default once-per-line filter.
warnings.simplefilter("always", ThitherWarning)


def warn(message: str) -> None:
    """Warn about the cell (a normal warning: filters, ``pytest.warns`` and ``-W error`` apply), never pointing at
    mini_magic's own source lines; shown as ``ThitherWarning: message`` while the extension is loaded."""
    warnings.warn_explicit(message, ThitherWarning, filename="%%thither", lineno=0, module="mini_magic")


def show_warnings_plainly() -> None:
    """Show ThitherWarnings as ``ThitherWarning: message``, without the ``%%thither:0:`` file-and-line prefix that
    the standard format gives a warning with no source line. Other warnings show as before.

    ``warnings.formatwarning`` is documented as the function to replace for this. Only the text changes: filters,
    ``-W error`` and recorders (``catch_warnings(record=True)``, ``pytest.warns``) work as before. The previous
    function formats every other warning, and :func:`restore_warnings` puts it back. Idempotent.
    """
    if hasattr(warnings.formatwarning, "mini_magic_previous"):
        return
    previous = warnings.formatwarning

    def formatwarning(message: Any, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
        if issubclass(category, ThitherWarning):
            return f"{category.__name__}: {message}\n"
        return previous(message, category, filename, lineno, line)

    formatwarning.mini_magic_previous = previous  # type: ignore[attr-defined]
    warnings.formatwarning = formatwarning


def restore_warnings() -> None:
    previous = getattr(warnings.formatwarning, "mini_magic_previous", None)
    if previous is not None:
        warnings.formatwarning = previous

