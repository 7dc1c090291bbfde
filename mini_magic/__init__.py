"""mini_magic: ``%%thither`` runs a notebook cell's closure in another Python process and brings the results back.

Load it in a notebook with ``%load_ext mini_magic``. This module stays import-light on purpose: the worker process
imports the package too (``python -m mini_magic.worker``), and must not pay for IPython or the kernel-side modules.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Thither": "mini_magic.config",
    "thither": "mini_magic.functions",
    "gather": "mini_magic.functions",
    "FunctionCall": "mini_magic.call_modes",
    "guard": "mini_magic.guards",
    "invoke": "mini_magic.invoker",
    "invoke_async": "mini_magic.invoker",
    "hither": "mini_magic.callbacks",
    "live_plot": "mini_magic.live",
    "progress": "mini_magic.live",
    **{
        name: "mini_magic.errors"
        for name in (
            "CaptureError",
            "MiniMagicError",
            "ProtocolMismatch",
            "RemoteError",
            "RunCancelled",
            "RunFailed",
            "RunTimeout",
            "ThitherUsageError",
            "ThitherWarning",
            "WorkerCrashed",
        )
    },
}


__all__ = [*_LAZY, "__version__", "load_ipython_extension", "unload_ipython_extension"]


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mini_magic' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext mini_magic``: register ``%%thither``, the ``Thither`` configurable and the run registry."""
    from .extension import load

    load(shell)


def unload_ipython_extension(shell: Any) -> None:
    """``%unload_ext mini_magic``: stop every worker, remove the magics, close the run store."""
    from .extension import unload

    unload(shell)
