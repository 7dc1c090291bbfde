"""What a ``@thither`` call needs from where it is made: configuration, run registry, output sink, backends.

A ``%%thither`` cell always has them: the extension's per-kernel state. A ``@thither`` function may also be called
from a notebook that never ran ``%load_ext mini_magic`` (the extension is loaded then, so the run shows in the
registry, the status bar and ``%thither runs`` like any other), from a terminal IPython, or from a plain Python
script with no IPython at all: there a process-wide :class:`ScriptRuntime` takes the extension's place, with the
same configuration defaults (``MINI_MAGIC_BACKEND``, the run store under ``MINI_MAGIC_HOME``) and output written to
the process's stdout and stderr. Its workers are stopped when the script exits.
"""

from __future__ import annotations

import atexit
import sys
import threading
from typing import Any, Protocol

from .jobs import CellContext


class Runtime(Protocol):
    """The surroundings a call runs in (the extension's state satisfies it)."""

    shell: Any  # None in a plain script
    config: Any  # the Thither configurable
    registry: Any  # RunRegistry
    sink: Any  # OutputSink of the foreground: the cell that is executing, or the process's stdout/stderr

    def backend(self, name: str) -> Any: ...


class ScriptRuntime:
    """A process without IPython: the extension's state, minus the kernel."""

    def __init__(self) -> None:
        from .config import Thither
        from .runs import RunRegistry
        from .sinks import StreamSink

        self.shell = None
        self.config = Thither()
        self.registry = RunRegistry(self.config.run_store or None)
        self.sink = StreamSink()
        self._backends: dict[str, Any] = {}
        self._lock = threading.Lock()

    def backend(self, name: str) -> Any:
        from .backends import backend_classes

        with self._lock:
            if name not in self._backends:
                self._backends[name] = backend_classes()[name].from_config(self.config, None)
            return self._backends[name]

    def close(self) -> None:
        """Record what is still running as cancelled, then stop every worker. Idempotent."""
        self.registry.close("the script exited")
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            try:
                backend.close()
            except Exception:  # noqa: BLE001 - closing goes on for the others
                pass


_script: ScriptRuntime | None = None
_script_lock = threading.Lock()


def current() -> Runtime:
    """The runtime of this process: the IPython shell's extension state (loading the extension if needed), else
    the script runtime."""
    shell = _ipython_shell()
    if shell is not None:
        from . import extension

        state = extension.state_of(shell)
        if state is None:
            shell.extension_manager.load_extension("mini_magic")
            state = extension.state_of(shell)
        if state is not None:
            return state
    return script_runtime()


def script_runtime() -> ScriptRuntime:
    global _script
    with _script_lock:
        if _script is None:
            _script = ScriptRuntime()
            atexit.register(close_script_runtime)
        return _script


def close_script_runtime() -> None:
    """Stop the script runtime's workers (at exit; tests call it to start afresh)."""
    global _script
    with _script_lock:
        runtime, _script = _script, None
    if runtime is not None:
        runtime.close()


def _ipython_shell() -> Any:
    if "IPython" not in sys.modules:  # no shell can exist: do not pay for importing IPython
        return None
    from IPython import get_ipython

    return get_ipython()


def request_context(shell: Any, *, label: str | None, hither_interval: float = 0.02,
                    background: bool = False) -> CellContext:
    """A run's context from the request the kernel is executing (its cell id, message id and In[N]); outside a
    kernel only the label (a terminal IPython or a script: no frontend that could render a widget)."""
    kernel = getattr(shell, "kernel", None)
    if shell is None:
        return CellContext(label=label, hither_interval=hither_interval, background=background, widgets=False)
    parent: dict[str, Any] = {}
    if kernel is not None:
        try:
            parent = kernel.get_parent() or {}
        except Exception:  # noqa: BLE001 - no parent outside a kernel request
            parent = {}
    from ._ipykernel import current_execution_count

    return CellContext(
        cell_id=(parent.get("metadata") or {}).get("cellId"),
        msg_id=(parent.get("header") or {}).get("msg_id"),
        execution_count=current_execution_count(shell),
        label=label,
        hither_interval=hither_interval,
        background=background,
        widgets=kernel is not None,
    )
