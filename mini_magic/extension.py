"""Per-kernel state of the extension: configuration, run registry, backends, and the notebook output sink."""

from __future__ import annotations

import atexit
import logging
from typing import Any

from . import library_settings
from ._ipykernel import wrap_kernel_shutdown
from .backends import Backend, backend_classes
from .config import Thither
from .errors import restore_warnings, show_warnings_plainly
from .options import RunOptions
from .runs import RunRegistry
from .sinks import NotebookSink

log = logging.getLogger("mini_magic")


class ExtensionState:
    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.config = Thither(parent=shell)
        kernel = getattr(shell, "kernel", None)
        kernel_id = getattr(kernel, "ident", None) if kernel is not None else None
        self.registry = RunRegistry(self.config.run_store or None, kernel_id=kernel_id)
        self.sink = NotebookSink(shell)
        self._backends: dict[str, Backend] = {}
        from .status import StatusChannel

        self.status = StatusChannel(self.registry, kernel_id)
        self.restore_shutdown: Any = lambda: None

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = backend_classes()[name].from_config(self.config, self.shell)
        return self._backends[name]

    def close(self, why: str = "exited") -> None:
        """End this kernel's runs, then stop everything. ``why`` completes "kernel pid N on HOST ...", the reason
        recorded for each run still active (e.g. "restarted").

        The registry closes first: it records every unfinished run as cancelled for that reason (and then accepts no
        other ending), so the endings the backends' close provokes (workers killed) cannot overwrite it, and a
        detached run's record stays open for ``%thither attach``. Idempotent.
        """
        self.registry.close(f"{self.registry.owner} {why}")
        self.status.close()
        for backend in self._backends.values():
            try:
                backend.close()
            except Exception:  # noqa: BLE001 - closing must go on for the others
                log.exception("closing backend %s failed", backend.name)
        self._backends.clear()


_STATE: dict[int, ExtensionState] = {}


def state_of(shell: Any) -> ExtensionState | None:
    """The extension's state in ``shell``; None where ``%load_ext mini_magic`` has not run."""
    return _STATE.get(id(shell))


def load(shell: Any) -> None:
    from .magics import ThitherMagics

    if id(shell) in _STATE:
        return
    show_warnings_plainly()
    state = ExtensionState(shell)
    _STATE[id(shell)] = state
    shell.register_magics(ThitherMagics(shell, state))
    from .status import register

    register(shell, state.status)
    shell.configurables.append(state.config)
    atexit.register(state.close)
    shell.events.register("pre_run_cell", _apply_pending_settings)
    _close_on_kernel_shutdown(shell, state)
    _prewarm_default_backend(state)


def _prewarm_default_backend(state: ExtensionState) -> None:
    """Let the default backend get ready for the first cell in the background (``Thither.prewarm``). Only a backend
    that overrides :meth:`Backend.prewarm` is created here: creating any other before its first cell would only
    move its cost, and its configuration errors, to ``%load_ext``."""
    name = state.config.backend
    cls = backend_classes().get(name) if state.config.prewarm else None
    if cls is None or cls.prewarm is Backend.prewarm:
        return
    state.backend(name).prewarm(RunOptions(backend=name, gpu=state.config.gpu, env=dict(state.config.env)))


def _apply_pending_settings(info: Any = None) -> None:
    """Before each cell: library settings a %%thither cell made for a library the kernel has imported since
    (``import numpy`` after a remote ``np.set_printoptions``) take effect here too (library_settings)."""
    library_settings.apply_pending()


def _close_on_kernel_shutdown(shell: Any, state: ExtensionState) -> None:
    """Stop backends when the kernel is asked to shut down, while the process still works normally.

    atexit is too late for network clients: by then Python's thread pools refuse new work, so a Modal App could not
    be stopped. ipykernel has no shutdown hook (see mini_magic._ipykernel.wrap_kernel_shutdown).
    """

    def close(restart: bool) -> None:
        try:
            state.close("restarted" if restart else "shut down")
        except Exception:  # noqa: BLE001 - shutting down must go on
            log.exception("closing mini_magic at kernel shutdown failed")

    state.restore_shutdown = wrap_kernel_shutdown(getattr(shell, "kernel", None), close)


def unload(shell: Any) -> None:
    state = _STATE.pop(id(shell), None)
    if state is None:
        return
    for kind in ("line", "cell"):
        shell.magics_manager.magics[kind].pop("thither", None)
    if state.config in shell.configurables:
        shell.configurables.remove(state.config)
    atexit.unregister(state.close)
    try:
        shell.events.unregister("pre_run_cell", _apply_pending_settings)
    except ValueError:  # not registered (another shell's load)
        pass
    state.restore_shutdown()
    from .status import unregister

    unregister(state.status)
    state.close("unloaded mini_magic (%unload_ext)")
    from .routing import uninstall

    uninstall()
    if not _STATE:
        restore_warnings()

