"""Send what a background run's callbacks print or display to that run's panel, not to whichever cell is executing.

A background run's events are drained on its own thread while other cells run. ipykernel routes output from plain
threads to the cell that is executing *now*, which is the wrong cell. So, once a background run starts, the kernel's
``sys.stdout``/``sys.stderr`` and display publisher are wrapped: a write or a display made where the context variable
:data:`ROUTE` is set (the drainer thread, and the async callbacks it starts, which copy its context) goes to that
panel's Output widget through thread-safe ``append_*``/``outputs`` updates; everything else passes through unchanged.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from typing import Any

from ._ipykernel import unwrap_display_publisher, wrap_display_publisher

ROUTE: contextvars.ContextVar[Any] = contextvars.ContextVar("mini_magic_output_route", default=None)

_installed_lock = threading.Lock()
_installed: dict[str, Any] = {}


class _RoutedStream:
    """A stand-in for ``sys.stdout``/``sys.stderr`` that diverts routed writes to an Output widget."""

    def __init__(self, original: Any, name: str) -> None:
        self._original = original
        self._name = name

    def write(self, text: str) -> int:
        target = ROUTE.get()
        if target is None:
            return self._original.write(text)
        append_stream(target, self._name, text)
        return len(text)

    def flush(self) -> None:
        if ROUTE.get() is None:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def append_stream(target: Any, name: str, text: str) -> None:
    """Add text to an Output widget, extending its last output when that is the same stream (``print`` writes in
    pieces; one output per piece would bloat the notebook)."""
    outputs = target.outputs
    if outputs and outputs[-1].get("output_type") == "stream" and outputs[-1].get("name") == name:
        last = outputs[-1]
        target.outputs = (*outputs[:-1], {**last, "text": last["text"] + text})
    else:
        target.outputs = (*outputs, {"output_type": "stream", "name": name, "text": text})


def append_display(target: Any, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    """Add a display_data output to an Output widget (setting its ``outputs`` trait is safe from any thread)."""
    target.outputs = (*target.outputs, {"output_type": "display_data", "data": data, "metadata": metadata or {}})


def install(shell: Any) -> None:
    """Wrap stdout, stderr and the display publisher once per kernel. Idempotent."""
    with _installed_lock:
        if _installed:
            return
        _installed["stdout"], _installed["stderr"] = sys.stdout, sys.stderr
        sys.stdout = _RoutedStream(sys.stdout, "stdout")  # type: ignore[assignment]
        sys.stderr = _RoutedStream(sys.stderr, "stderr")  # type: ignore[assignment]
        original_publish: Any = None
        original_clear: Any = None

        def publish(data: dict[str, Any], metadata: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> Any:
            target = ROUTE.get()
            if target is None:
                return original_publish(data, metadata, *args, **kwargs)
            append_display(target, data, metadata)
            return None

        def clear_output(wait: bool = False) -> Any:
            target = ROUTE.get()
            if target is None:
                return original_clear(wait)
            target.outputs = ()
            return None

        original_publish, original_clear = wrap_display_publisher(shell, publish, clear_output)
        _installed["publisher"] = (shell.display_pub,)


def uninstall() -> None:
    with _installed_lock:
        if not _installed:
            return
        if isinstance(sys.stdout, _RoutedStream):
            sys.stdout = _installed["stdout"]
        if isinstance(sys.stderr, _RoutedStream):
            sys.stderr = _installed["stderr"]
        unwrap_display_publisher(_installed["publisher"][0])
        _installed.clear()
