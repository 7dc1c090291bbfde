"""Worker side: the interpreter state a run may change, saved before it and put back after it.

A result must not depend on which warm worker a run lands on. A cell can change process-wide state that outlives its
namespace: ``sys`` hooks and limits, builtins, warning filters, the root logger, signal handlers and the signal mask,
interval timers, resource limits, the umask, pyplot figures and ``rcParams``. ``InterpreterState.save()`` takes a
snapshot of all of it (a few tens of microseconds: identity copies, no deep copies), ``restore()`` puts back what
differs, and ``unrestorable()`` names what the run changed that no restore can undo (a lowered hard resource limit,
a raised niceness, a switched matplotlib backend): the pool then recycles the worker instead of reusing it.

``release()`` empties the run's namespace so that nothing the cell defined (a function whose ``__globals__`` is the
namespace, an exception's frames) keeps the run's inputs alive in an idle worker until a garbage collection.

Standard library only; matplotlib is looked up in ``sys.modules`` (a run imported it), never imported here.
"""

from __future__ import annotations

import _signal
import builtins
import gc
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

_MISSING = object()
# The C function: signal.getsignal converts each result to an enum, ten times slower over ~60 signals per run.
_getsignal: Callable[[int], Any] = getattr(_signal, "getsignal", signal.getsignal)

# Replaced by identity: streams and hooks a cell may swap.
_SYS_OBJECTS = ("stdin", "stdout", "stderr", "displayhook", "excepthook", "unraisablehook", "breakpointhook")
# Lists the import system reads; restored in place (other modules hold the list objects).
_SYS_LISTS = ("meta_path", "path_hooks")
# What the interpreter leaves behind after an uncaught exception: it would keep the failed run's frames alive.
_SYS_LEFTOVERS = ("last_type", "last_value", "last_traceback", "last_exc")


def _getters() -> list[tuple[Callable[[], Any], Callable[[Any], Any]]]:
    """(get, set) pairs of interpreter settings; the set is called only when the value differs."""
    pairs: list[tuple[Callable[[], Any], Callable[[Any], Any]]] = [
        (sys.getrecursionlimit, sys.setrecursionlimit),
        (sys.getswitchinterval, sys.setswitchinterval),
        (sys.gettrace, sys.settrace),
        (sys.getprofile, sys.setprofile),
        (threading.gettrace, threading.settrace),
        (threading.getprofile, threading.setprofile),
        (lambda: threading.excepthook, lambda hook: setattr(threading, "excepthook", hook)),
        (gc.isenabled, lambda on: gc.enable() if on else gc.disable()),
        (gc.get_threshold, lambda t: gc.set_threshold(*t)),
        (lambda: warnings.showwarning, lambda f: setattr(warnings, "showwarning", f)),
        (lambda: warnings.formatwarning, lambda f: setattr(warnings, "formatwarning", f)),
        (lambda: warnings.defaultaction, lambda a: setattr(warnings, "defaultaction", a)),
        (logging.getLoggerClass, logging.setLoggerClass),
        (logging.getLogRecordFactory, logging.setLogRecordFactory),
        (lambda: logging.root.manager.disable, logging.disable),
        (lambda: logging.root.level, logging.root.setLevel),
        (lambda: logging.root.disabled, lambda d: setattr(logging.root, "disabled", d)),
        (lambda: logging.root.propagate, lambda p: setattr(logging.root, "propagate", p)),
    ]
    if hasattr(sys, "get_int_max_str_digits"):
        pairs.append((sys.get_int_max_str_digits, sys.set_int_max_str_digits))
    if hasattr(sys, "getdlopenflags"):
        pairs.append((sys.getdlopenflags, sys.setdlopenflags))
    if hasattr(os, "sched_getaffinity"):
        pairs.append((lambda: os.sched_getaffinity(0), lambda cpus: os.sched_setaffinity(0, cpus)))
    if hasattr(signal, "pthread_sigmask"):
        pairs.append((lambda: signal.pthread_sigmask(signal.SIG_BLOCK, ()),
                      lambda mask: signal.pthread_sigmask(signal.SIG_SETMASK, mask)))
    return pairs


_SETTINGS = _getters()
# Handlers of every signal Python can set, except SIGINT (Worker.run arms and disarms it around each run).
_SIGNALS = [s for s in signal.valid_signals()
            if s not in (signal.SIGINT, getattr(signal, "SIGKILL", None), getattr(signal, "SIGSTOP", None))]
_TIMERS = [getattr(signal, n) for n in ("ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF") if hasattr(signal, n)]
_RLIMITS = {n: getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_")} if resource else {}


def _mutable_lists() -> list[list[Any]]:
    """The list objects restored in place: sys.meta_path/path_hooks, warning filters, root handlers and filters."""
    return [*(getattr(sys, n) for n in _SYS_LISTS), warnings.filters, logging.root.handlers, logging.root.filters]


def _same_items(a: list[Any] | dict[Any, Any], b: list[Any] | dict[Any, Any]) -> bool:
    """The C-level ``==`` of list or dict (an identity check per item first, so cheap when nothing changed).

    Not the subclass's ``==`` (RcParams inherits Mapping's, in Python). A value whose ``==`` does not give a bool
    (an array a cell stored as a builtin) counts as a change.
    """
    if len(a) != len(b):
        return False
    try:
        return bool(dict.__eq__(a, b) if isinstance(a, dict) else list.__eq__(a, b))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - see above
        return False


def _finite(limit: int) -> float:
    return float("inf") if resource is not None and limit == resource.RLIM_INFINITY else limit


class InterpreterState:
    """A snapshot of the process-wide interpreter state one run may change."""

    def __init__(self) -> None:
        self.sys_objects = [getattr(sys, n, _MISSING) for n in _SYS_OBJECTS]
        self.settings = [get() for get, _ in _SETTINGS]
        self.lists = [(lst, list(lst)) for lst in _mutable_lists()]
        self.warnings_filters = warnings.filters  # the object: a cell may rebind the module attribute
        self.onceregistry = dict(warnings.onceregistry)
        self.builtins = dict(builtins.__dict__)
        self.signals = {s: _getsignal(s) for s in _SIGNALS}
        self.timers = [signal.getitimer(t) for t in _TIMERS]
        self.rlimits = {n: resource.getrlimit(r) for n, r in _RLIMITS.items()} if resource else {}
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.niceness = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else 0
        self.rc_params = _rc_params()
        self.restored = False

    @classmethod
    def save(cls) -> InterpreterState:
        return cls()

    def unrestorable(self) -> str | None:
        """What the run changed that restore() cannot undo; the worker must not run another cell then."""
        # Whether a lowered hard limit or a raised niceness can be undone depends on capabilities (CAP_SYS_RESOURCE,
        # CAP_SYS_NICE, RLIMIT_NICE), not on the uid: the only reliable test is to undo it now.
        for name, saved in self.rlimits.items():
            rlimit = _RLIMITS[name]
            now = resource.getrlimit(rlimit)
            if _finite(now[1]) < _finite(saved[1]):
                try:
                    resource.setrlimit(rlimit, saved)
                except (ValueError, OSError):
                    return f"the cell lowered the hard limit {name} from {saved[1]} to {now[1]}; it cannot be raised again"
        if hasattr(os, "getpriority") and os.getpriority(os.PRIO_PROCESS, 0) > self.niceness:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, self.niceness)
            except OSError:
                return "the cell raised the worker's niceness (os.nice); it cannot be lowered again"
        for sig, handler in self.signals.items():
            if handler is None and _getsignal(sig) is not None:
                return f"the cell replaced the handler of {signal.Signals(sig).name} that was not set from Python"
        rc = getattr(sys.modules.get("matplotlib"), "rcParams", None)
        # Before the run, or for a run that imported matplotlib what its import took: MPLBACKEND (the worker sets it).
        before = os.environ.get("MPLBACKEND") if self.rc_params is None else self.rc_params.get("backend")
        after = dict.get(rc, "backend") if isinstance(rc, dict) else None
        if isinstance(before, str) and isinstance(after, str) and _backend_name(after) != _backend_name(before):
            return "the cell switched the matplotlib backend (matplotlib.use)"
        return None

    def restore(self) -> None:
        """Put back what the run changed; cheap when nothing did (C-level comparisons, a few system calls).

        Once per run, as soon as the cell's code is done: the worker's own code that packs and sends the results must
        not run under the cell's builtins, recursion limit or streams (``builtins.isinstance = None`` in a cell
        would otherwise crash the worker). Later calls do nothing.
        """
        if self.restored:
            return
        self.restored = True
        for name, saved in zip(_SYS_OBJECTS, self.sys_objects):
            if getattr(sys, name, _MISSING) is not saved:
                if saved is _MISSING:
                    delattr(sys, name)
                else:
                    setattr(sys, name, saved)
        for name in _SYS_LEFTOVERS:
            if hasattr(sys, name):
                delattr(sys, name)
        for (get, put), saved in zip(_SETTINGS, self.settings):
            now = get()
            if now is not saved and now != saved:
                put(saved)
        warnings.filters = self.warnings_filters
        for lst, items in self.lists:
            if not _same_items(lst, items):
                lst[:] = items
        warnings._filters_mutated()  # type: ignore[attr-defined]  # the C side caches per-module decisions
        _restore_dict(warnings.onceregistry, self.onceregistry)
        _restore_dict(builtins.__dict__, self.builtins)
        logging.root.manager._clear_cache()  # type: ignore[attr-defined]  # cached isEnabledFor per logger
        for sig, saved in self.signals.items():
            if saved is not None and _getsignal(sig) is not saved:
                signal.signal(sig, saved)
        for timer, saved in zip(_TIMERS, self.timers):
            if signal.getitimer(timer) != saved:
                signal.setitimer(timer, *saved)
        for name, saved in self.rlimits.items():
            rlimit = _RLIMITS[name]
            if resource.getrlimit(rlimit) != saved:
                try:
                    resource.setrlimit(rlimit, saved)
                except (ValueError, OSError):
                    pass  # a lowered hard limit: unrestorable() has the worker recycled
        os.umask(self.umask)
        if hasattr(os, "setpriority") and os.getpriority(os.PRIO_PROCESS, 0) != self.niceness:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, self.niceness)
            except OSError:
                pass  # a raised niceness: unrestorable() has the worker recycled
        _restore_matplotlib(self.rc_params)


def _restore_dict(target: dict[Any, Any], saved: dict[Any, Any]) -> None:
    if _same_items(target, saved):
        return
    for key in [k for k in target if k not in saved]:
        del target[key]
    target.update(saved)


def _backend_name(name: str) -> str:
    """Built-in backend names are case-insensitive (``MPLBACKEND=Agg`` and ``agg`` are one); ``module://`` ones not."""
    return name if name.startswith("module://") else name.lower()


def _rc_params() -> dict[str, Any] | None:
    """matplotlib's rcParams as a plain dict, if a run imported matplotlib (never imported here)."""
    matplotlib = sys.modules.get("matplotlib")
    params = getattr(matplotlib, "rcParams", None)
    # dict.items, not dict.copy: RcParams overrides __iter__, which sends a copy through its validating __getitem__.
    return dict(dict.items(params)) if isinstance(params, dict) else None


def _restore_matplotlib(saved: dict[str, Any] | None) -> None:
    """Close every pyplot figure (shown or not, none may appear in another run) and put rcParams back.

    ``saved`` is None when the run itself imported matplotlib: then the baseline is what matplotlib read from its
    rc files at import (``rcParamsOrig``), which is what a fresh worker's first import gives (backend aside).
    """
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")
    matplotlib = sys.modules.get("matplotlib")
    params = getattr(matplotlib, "rcParams", None)
    if not isinstance(params, dict):
        return
    if saved is None:
        original = getattr(matplotlib, "rcParamsOrig", None)
        if not isinstance(original, dict):
            return
        saved = dict(dict.items(original))
    # The backend stays as it is: rcParams alone cannot switch pyplot back (unrestorable() has the worker recycled).
    saved = {**saved, "backend": dict.get(params, "backend")}
    if not _same_items(params, saved):
        dict.update(params, saved)  # values validated when they were set; bypass re-validation


def environ_snapshot() -> dict[Any, Any]:
    """The process environment as os.environ holds it, to compare and restore. Copying its encoded dict is one
    C-level copy; going through the mapping decodes every variable (in a worker twice per run, save and compare:
    most of its own cost of a trivial cell). ``_data`` is CPython's; where it is missing, the decoded copy."""
    data = getattr(os.environ, "_data", None)
    return dict(data) if isinstance(data, dict) else dict(os.environ)


def restore_environ(saved: dict[Any, Any]) -> None:
    environ: Any = os.environ
    if saved and all(isinstance(k, bytes) for k in saved) and hasattr(os, "environb"):
        environ = os.environb  # the same environment, its keys and values as bytes: what _data holds on POSIX
    environ.clear()
    environ.update(saved)
