"""A matplotlib Figure that crossed between kernel and worker renders as an image, as it does where it was made.

IPython shows a Figure as an image only through figure formatters, and those are registered as a side effect of
importing pyplot under the inline backend (matplotlib_inline's ``configure_inline_support``). A figure made with
pyplot in a worker and brought back (or shipped to a worker that never imported pyplot) arrives as a plain Figure:
pickling drops its canvas and, since a run's figures are closed before its values are packed, it does not re-register
with pyplot. Without formatters, the process it arrived in shows ``<Figure size 640x480 with 1 Axes>`` where the same
cell run where pyplot was imported shows the image.

The least surprising remedy registers what that pyplot import would have registered for figures, and nothing else:
the formatters of the inline backend's formats (png by default; ``InlineBackend.figure_formats`` and
``print_figure_kwargs`` from the IPython configuration apply), by IPython's own ``select_figure_formats``. No pyplot
import, no backend switch, no post-execute hook, no rcParams change. It happens only when all of these hold:

* a Figure class is loaded (``matplotlib.figure`` is imported: something brought a figure, or the user imported it);
* pyplot is not imported (otherwise its own integration decides, exactly as in any kernel: under a non-inline
  backend a figure stays text, as it would);
* no formatter for Figure exists yet (a user's own registration wins);
* the shell renders rich output (a kernel or the worker's shell; not a terminal IPython, which shows text anyway).

Standard library only at import: the worker imports this module too.
"""

from __future__ import annotations

import sys
from typing import Any

_FIGURE_MIME_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "application/pdf")
# matplotlib_inline's InlineBackend defaults (0.1.x and 0.2.x): png, tight bounding box.
_DEFAULT_FORMATS = ("png",)
_DEFAULT_PRINT_KWARGS = {"bbox_inches": "tight"}


def enable(shell: Any) -> bool:
    """Register the inline backend's figure formatters on ``shell`` if a Figure could otherwise not render as an
    image there (see the module docstring for when). Returns whether it registered them. Cheap when there is
    nothing to do (a few dict lookups), so it may be called after every run."""
    if "matplotlib.figure" not in sys.modules or "matplotlib.pyplot" in sys.modules or shell is None:
        return False
    formatter = getattr(shell, "display_formatter", None)
    formatters = getattr(formatter, "formatters", None)
    if not isinstance(formatters, dict) or not all(mime in formatters for mime in _FIGURE_MIME_TYPES):
        return False
    if not _renders_rich_output(shell):
        return False
    figure_class = sys.modules["matplotlib.figure"].Figure
    # The ipympl/nbagg backends register theirs on the _ipython_display_ formatter.
    registered = [formatters[mime] for mime in _FIGURE_MIME_TYPES]
    registered.append(getattr(formatter, "ipython_display_formatter", None))
    if any(f is not None and _has_printer(f, figure_class) for f in registered):
        return False
    matplotlib = sys.modules.get("matplotlib")
    # The "auto" backend is a sentinel object, not a name: select_figure_formats reads the backend, and reading the
    # sentinel makes matplotlib pick a backend, which imports pyplot. Then leave it to pyplot.
    if not isinstance(dict.get(getattr(matplotlib, "rcParams", {}), "backend"), str):
        return False
    try:
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:
        return False
    formats, print_kwargs = _inline_backend_settings(shell)
    select_figure_formats(shell, formats, **print_kwargs)
    return True


def _inline_backend_settings(shell: Any) -> tuple[set[str], dict[str, Any]]:
    """The inline backend's figure formats and print_figure kwargs: its defaults, with what the shell's configuration
    sets for ``InlineBackend`` (config files, command line). Read from the configuration, not from an InlineBackend
    instance: importing matplotlib_inline imports its backend module, which imports pyplot and activates it."""
    formats: set[str] = set(_DEFAULT_FORMATS)
    print_kwargs: dict[str, Any] = dict(_DEFAULT_PRINT_KWARGS)
    config = getattr(shell, "config", None)
    section = config.get("InlineBackend") if config is not None and "InlineBackend" in config else None
    if section is not None:
        if "figure_formats" in section:
            chosen = section["figure_formats"]
            formats = {chosen} if isinstance(chosen, str) else set(chosen)
        if "print_figure_kwargs" in section:
            print_kwargs = dict(section["print_figure_kwargs"])
    return formats, print_kwargs


def _renders_rich_output(shell: Any) -> bool:
    """A kernel (ipykernel's shell has a ``kernel``) or the worker's shell, whose displays travel to a notebook."""
    return getattr(shell, "kernel", None) is not None or getattr(shell, "renders_rich_output", False)


def _has_printer(formatter: Any, cls: type) -> bool:
    try:
        formatter.lookup_by_type(cls)
    except KeyError:
        return False
    return True


def enable_here() -> bool:
    """:func:`enable` on this process's IPython shell, if it has one (the kernel side, after a run's values arrived)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return enable(get_ipython())
