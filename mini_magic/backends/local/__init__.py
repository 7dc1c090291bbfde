"""The local backend: worker processes on this machine.

- ``backend``: :class:`LocalBackend` (options -> worker profile) and :class:`LocalRun` (one job's handle).
- ``pool``: :class:`WorkerPool`, reuse, queueing and the size limit; no IPython, no GPU probing.
- ``process``: :class:`WorkerProcess`, the kernel's handle on one worker process (keeper, socket, reader thread).
- ``gpus``: ``--gpu`` on this machine (``nvidia-smi``).  ``resources``: ``--volume`` and ``--secret`` here.
- ``runtime_dir``: the kernel's private directory of sockets and worker logs.

``LocalBackend`` is imported on first use, so that the pool and the process handle can be imported without the
kernel-side modules the backend needs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalBackend"]


def __getattr__(name: str) -> Any:
    if name == "LocalBackend":
        from .backend import LocalBackend

        return LocalBackend
    raise AttributeError(f"module 'mini_magic.backends.local' has no attribute {name!r}")
