"""Worker side: ``display()``, ``update_display``, ``clear_output`` and matplotlib figures become events.

Where IPython is importable in the worker (always on the local backend), a minimal ``InteractiveShell`` whose display
publisher emits Display/UpdateDisplay/ClearOutput events is installed, so ``IPython.display`` functions, objects'
``_repr_*_`` methods and the matplotlib inline backend behave as in a notebook. Without IPython (a bare remote
image), ``display`` is still a builtin that sends the object's mimebundle from its ``_repr_*_`` methods.

The shell is made when a run first needs it, not when the worker starts: importing IPython and making its shell is
about half of a worker's start-up, and a run that displays nothing never needs it. It is made when IPython or
matplotlib is first imported (an import hook: the inline backend must find it when pyplot loads), when ``display``
is first called, and when a trailing value is first formatted.

What a run shows follows a notebook cell of the kernel (with the matplotlib-inline backend):

* the cell's trailing value is formatted here, by this process's formatters, so the display state of the libraries
  in this process applies (``np.set_printoptions``, ``pd.options.display``, ``rcParams``), as it does to ``print``;
  the kernel shows that bundle as the cell's result while ``Out[n]``/``_`` hold the value itself;
* figures the cell made show at the end of the cell and are closed, also when the cell raised; no figure and no
  inline-backend state of one run reaches the next (a warm worker's next cell starts as a fresh kernel cell does);
* a Figure that arrived by value renders as an image (see figure_formats).
"""

from __future__ import annotations

import builtins
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

from ..wire import ClearOutput, Display, UpdateDisplay

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
        self._ipython = False  # IPython is importable and its shell not made yet
        self._post_execute_pending = False

    def publish(self, data: dict[str, Any], metadata: dict[str, Any] | None, display_id: str | None, update: bool):
        self._sync()
        self.emit(UpdateDisplay if update else Display, data=data, metadata=metadata or {}, display_id=display_id)

    def clear_output(self, wait: bool = False) -> None:
        self._sync()
        self.emit(ClearOutput, wait=wait)

    def ensure_shell(self) -> None:
        """Make IPython's shell now if IPython is here and it is not made yet (see the module docstring)."""
        if self.shell is None and self._ipython:
            self._ipython = False  # once: a failure falls back for good, and the import below re-enters the hook
            try:
                self.shell = _ipython_shell(self)
            except ImportError:
                builtins.display = self.fallback_display  # type: ignore[attr-defined]

    def display(self, *objs: Any, **kwargs: Any) -> Any:
        """The builtin ``display`` until IPython's replaces it: makes the shell, then displays through it."""
        self.ensure_shell()
        if self.shell is None:
            return self.fallback_display(*objs, **kwargs)
        from IPython.display import display

        return display(*objs, **kwargs)

    def format(self, value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        self.ensure_shell()
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

    def format_result(self, value: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The trailing value's mimebundle and metadata, as the kernel's displayhook would compute them, but with this
        process's formatters and library options. Called right after the cell's code, before ``after_run`` (the
        kernel's displayhook also runs before post_execute). None when formatting failed (the traceback went to
        the cell's stderr, as IPython reports a failing formatter): the kernel then formats the value itself."""
        try:
            data, metadata = self.format(value)
        except Exception:  # noqa: BLE001 - a broken repr must not fail a run that succeeded
            import traceback

            sys.stderr.write("mini_magic: the value of the cell's last expression could not be formatted in the "
                             "worker:\n" + traceback.format_exc())
            return None
        return _text_safe(data), dict(metadata or {})

    def before_run(self) -> None:
        self._post_execute_pending = True
        if self.shell is not None:
            _reset_inline_backend()
            if "matplotlib.figure" in sys.modules:  # a Figure may have arrived with the run's inputs
                from .. import figure_formats

                figure_formats.enable(self.shell)
            self.shell.events.trigger("pre_execute")

    def after_run(self) -> None:
        """End the cell as a kernel does, once per run: matplotlib's inline backend shows the figures the cell made
        and closes them. Also after a cell that raised (IPython runs post_execute whatever the cell did)."""
        if self.shell is not None and self._post_execute_pending:
            self._post_execute_pending = False
            self.shell.events.trigger("post_execute")


def _text_safe(data: dict[str, Any]) -> dict[str, Any]:
    """Binary representations base64-encoded, as the kernel sends them (and as IPython's own figure formatters
    return them): the bundle is then plain text the kernel can publish as is and the scrubber can search."""
    import base64

    return {mime: base64.b64encode(value).decode("ascii") if isinstance(value, (bytes, bytearray)) else value
            for mime, value in data.items()}


def _reset_inline_backend() -> None:
    """Start the run with the inline backend's state of a fresh kernel cell.

    Its "draw was called" flag and list of figures to draw would otherwise carry over from a run that ended without
    post_execute (an interrupt), and the worker's restore of ``rcParams`` after each run sets ``interactive`` back to
    matplotlib's default (False), while the inline backend turned it on when pyplot was first imported, as it does
    in a kernel: without it, no figure made after the first run would show at the end of its cell.
    """
    inline = sys.modules.get("matplotlib_inline.backend_inline")
    if inline is None:
        return
    inline.show._draw_called = False
    inline.show._to_draw = []
    matplotlib = sys.modules.get("matplotlib")
    backend = dict.get(getattr(matplotlib, "rcParams", {}), "backend")
    if isinstance(backend, str) and backend.endswith("backend_inline") and not matplotlib.is_interactive():
        matplotlib.interactive(True)


def install(emit: Emit, sync: Callable[[], None]) -> DisplayBridge:
    bridge = DisplayBridge(emit, sync)
    if not _importable("IPython"):
        builtins.display = bridge.fallback_display  # type: ignore[attr-defined]
        return bridge
    bridge._ipython = True
    # find_spec, not import: importing matplotlib_inline imports matplotlib and its backend module, which would
    # then miss the shell and never register the PNG formatter (and costs start-up time).
    if "MPLBACKEND" not in os.environ and _importable("matplotlib_inline"):
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    builtins.display = bridge.display  # type: ignore[attr-defined]
    if any(name in sys.modules for name in _SHELL_MODULES):  # imported before us (a sitecustomize, a runtime)
        bridge.ensure_shell()
    else:
        sys.meta_path.insert(0, _ShellOnImport(bridge))
    return bridge


_SHELL_MODULES = ("IPython", "matplotlib")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a module with no spec
        return False


class _ShellAfterExec(importlib.abc.Loader):
    def __init__(self, loader: Any, bridge: DisplayBridge) -> None:
        self._loader, self._bridge = loader, bridge

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        self._bridge.ensure_shell()


class _ShellOnImport(importlib.abc.MetaPathFinder):
    """Makes the shell right after IPython or matplotlib is first imported (their package's own code has run)."""

    def __init__(self, bridge: DisplayBridge) -> None:
        self._bridge = bridge

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _SHELL_MODULES or not self._bridge._ipython:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ShellAfterExec(spec.loader, self._bridge)
        return spec


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
        renders_rich_output = True  # its displays go to a notebook (figure_formats)

        def init_io(self) -> None:  # keep the worker's captured sys.stdout/sys.stderr as they are
            pass

    config = Config()
    config.HistoryManager.enabled = False
    shell = WorkerInteractiveShell.instance(config=config)
    from IPython.display import display

    builtins.display = display  # type: ignore[attr-defined]  # as IPython's shell sets it (older ones did not)
    if "matplotlib" in sys.modules and os.environ.get("MPLBACKEND", "").endswith("backend_inline"):
        # Something (a sitecustomize, a runtime) imported matplotlib before us: switch its backend now that the
        # shell exists (the inline backend hooks itself into the shell when its module loads).
        sys.modules["matplotlib"].use(os.environ["MPLBACKEND"])
    return shell
