"""Worker side: ``display()``, ``update_display``, ``clear_output`` and matplotlib figures become events.

Where IPython is importable in the worker (always on the local backend), a minimal ``InteractiveShell`` whose display
publisher emits Display/UpdateDisplay/ClearOutput events is installed, so ``IPython.display`` functions, objects'
``_repr_*_`` methods and the matplotlib inline backend behave as in a notebook. Without IPython (a bare remote
image), ``display`` is still a builtin that sends the object's mimebundle from its ``_repr_*_`` methods.
"""

from __future__ import annotations

import builtins
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

from .wire import ClearOutput, Display, UpdateDisplay

Emit = Callable[..., None]

_REPR_METHODS = {
    "text/html": "_repr_html_",
    "text/markdown": "_repr_markdown_",
    "image/svg+xml": "_repr_svg_",
    "image/png": "_repr_png_",
    "image/jpeg": "_repr_jpeg_",
    "text/latex": "_repr_latex_",
    "application/json": "_repr_json_",
}


def plain_mimebundle(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A mimebundle from the object's own ``_repr_*_`` methods (no IPython needed)."""
    method = getattr(obj, "_repr_mimebundle_", None)
    if callable(method):
        result = method()
        bundle, metadata = result if isinstance(result, tuple) else (result, {})
        bundle = dict(bundle or {})
        bundle.setdefault("text/plain", repr(obj))
        return bundle, dict(metadata or {})
    data: dict[str, Any] = {"text/plain": repr(obj)}
    for mime, name in _REPR_METHODS.items():
        method = getattr(obj, name, None)
        if callable(method):
            try:
                value = method()
            except Exception:  # noqa: BLE001 - a broken repr must not break display
                continue
            if value is not None:
                if isinstance(value, bytes):
                    import base64

                    value = base64.b64encode(value).decode("ascii")
                data[mime] = value
    return data, {}


class DisplayBridge:
    """Routes display machinery to events; ``before_run``/``after_run`` bracket each job."""

    def __init__(self, emit: Emit, sync: Callable[[], None]) -> None:
        self.emit = emit
        self._sync = sync
        self.shell: Any = None

    def publish(self, data: dict[str, Any], metadata: dict[str, Any] | None, display_id: str | None, update: bool):
        self._sync()
        self.emit(UpdateDisplay if update else Display, data=data, metadata=metadata or {}, display_id=display_id)

    def clear_output(self, wait: bool = False) -> None:
        self._sync()
        self.emit(ClearOutput, wait=wait)

    def format(self, value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.shell is not None:
            data, metadata = self.shell.display_formatter.format(value)
            return dict(data), dict(metadata)
        return plain_mimebundle(value)

    def fallback_display(self, *objs: Any, raw: bool = False, display_id: Any = None, **kwargs: Any) -> Any:
        if display_id is True:
            display_id = os.urandom(16).hex()
        for obj in objs:
            data, metadata = (obj, {}) if raw else plain_mimebundle(obj)
            self.publish(data, metadata, display_id, update=bool(kwargs.get("update")))
        return display_id

    def before_run(self) -> None:
        if self.shell is not None:
            self.shell.events.trigger("pre_execute")

    def after_run(self) -> None:
        if self.shell is not None:
            # matplotlib's inline backend shows pending figures here, as at the end of a notebook cell.
            self.shell.events.trigger("post_execute")


def install(emit: Emit, sync: Callable[[], None]) -> DisplayBridge:
    bridge = DisplayBridge(emit, sync)
    try:
        bridge.shell = _ipython_shell(bridge)
    except ImportError:
        builtins.display = bridge.fallback_display  # type: ignore[attr-defined]
    return bridge


def _ipython_shell(bridge: DisplayBridge) -> Any:
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets import Type
    from traitlets.config import Config

    class EventPublisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):  # type: ignore[override]
            bridge.publish(data, metadata, (transient or {}).get("display_id"), update)

        def clear_output(self, wait=False):  # type: ignore[override]
            bridge.clear_output(wait)

    class WorkerInteractiveShell(InteractiveShell):
        display_pub_class = Type(EventPublisher)

        def init_io(self) -> None:  # keep the worker's captured sys.stdout/sys.stderr as they are
            pass

    # find_spec, not import: importing matplotlib_inline imports matplotlib and its backend module, which would
    # then miss the shell below and never register the PNG formatter (and costs start-up time).
    if "MPLBACKEND" not in os.environ and importlib.util.find_spec("matplotlib_inline") is not None:
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    config = Config()
    config.HistoryManager.enabled = False
    shell = WorkerInteractiveShell.instance(config=config)
    if "matplotlib" in sys.modules and os.environ.get("MPLBACKEND", "").endswith("backend_inline"):
        # Something (a sitecustomize, a runtime) imported matplotlib before us: switch its backend now that the
        # shell exists (the inline backend hooks itself into the shell when its module loads).
        sys.modules["matplotlib"].use(os.environ["MPLBACKEND"])
    return shell
