"""The compact run panel shown in a cell: state, backend/GPU, elapsed time, a Cancel button, and — for a background
run — its own output area and progress bars.

Widgets are created on the kernel's main thread (creating widgets from other threads is unreliable); afterwards
only traits are set, which is safe from any thread (ipykernel queues the messages on its IO thread).

Every widget shown here also carries a readable ``text/plain`` form, kept current at the moments that matter: where
no widget manager renders it (nbconvert, GitHub's notebook view, editors without widget support) the notebook keeps
only that text, so it says what the widget would show ("✔ done · local · 00:03 · run 1a2b…", "epochs: 100%|…|
100/100") instead of ``VBox(children=(HBox(…``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from typing import Any

from ._ipykernel import handle_comm_messages_where_they_arrive
from .routing import ROUTE
from .runs import RunRecord, RunState

_ICONS = {
    RunState.QUEUED: "⏳",
    RunState.RUNNING: "⚡",
    RunState.DONE: "✔",
    RunState.FAILED: "✖",
    RunState.CANCELLED: "■",
}
_COLOURS = {RunState.DONE: "#2e7d32", RunState.FAILED: "#c62828", RunState.CANCELLED: "#6d4c41"}

FOREGROUND_HINT = (
    "Cancel reaches a running cell only where the frontend delivers widget messages while a cell runs "
    "(JupyterLab ≥ 4.4); elsewhere use Kernel → Interrupt."
)


def format_elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:" if hours else "") + "%02d:%02d" % divmod(rest, 60)


def format_duration(seconds: float | None) -> str:
    """A run's length for tables: ``<1 ms``, ``12 ms``, ``3.41 s``, ``02:05``, ``1:02:05`` (a fast run is never ``0.00s``)."""
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return "<1 ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    return format_elapsed(seconds)


def runs_table(records: Iterable[RunRecord], *, with_kernel: bool) -> str:
    """``%thither runs``: one row a run, newest first, under a header; ``with_kernel`` adds the kernel's id.

    The last column, REASON, says why a run did not end ``done``: the error of a failed run, the cause of a
    cancelled one ("cancelled: kernel pid N on HOST restarted") or a lost one ("lost: kernel pid N on HOST died").
    One column, not two: a run has one such reason, and the record keeps it in ``error``.
    """
    header = ["RUN", "STATE", "BACKEND", *(["KERNEL"] if with_kernel else []), "TIME", "CELL", "REASON"]
    rows = [header]
    for record in records:
        row = [record.run_id, record.state.value, record.backend]
        if with_kernel:
            row.append((record.kernel_id or "-")[:8])
        row += [format_duration(record.elapsed), (record.label or "")[:40], (record.error or "")[:80]]
        rows.append(row)
    if len(rows) == 1:
        return "no runs recorded yet"
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    time_column = header.index("TIME")
    lines = []
    for row in rows:
        cells = [cell.rjust(width) if i == time_column else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def describe(record: RunRecord) -> str:
    gpu = record.profile.get("gpu")
    parts = [f"{_ICONS[record.state]} {record.state.value}", record.backend]
    if gpu:
        parts.append(f"GPU {gpu}")
    parts.append(format_elapsed(record.elapsed))
    parts.append(f"run {record.run_id}")
    if record.error and record.state.terminal:
        parts.append(record.error[:160])
    return " · ".join(parts)


class TextView:
    """A widget displayed with fallback forms of our own, which :meth:`refresh` re-publishes.

    The display carries ipywidgets' own view bundle (its ``_repr_mimebundle_``, IPython's public display protocol)
    with ``fallback()``'s entries added — always ``text/plain``, maybe an ``image/png`` — and :meth:`refresh` is an
    ``update_display`` of that display id, which frontends with a widget manager re-render from the same model and
    the others store as the output's new content.
    """

    def __init__(self, widget: Any, fallback: Callable[[], dict[str, Any]]) -> None:
        self.widget = widget
        self.fallback = fallback
        self._handle: Any = None

    def bundle(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if getattr(self.widget, "comm", None) is not None:  # a closed widget (a finished leave=False bar) has no view
            data.update(self.widget._repr_mimebundle_())
        data.update(self.fallback())
        return data

    def show(self) -> None:
        from IPython.display import display

        self._handle = display(self.bundle(), raw=True, display_id=True)

    def refresh(self) -> None:
        if self._handle is None:
            return
        token = ROUTE.set(None)  # from a background run's drainer: this display is the cell's, not the panel's
        try:
            self._handle.update(self.bundle(), raw=True)
        finally:
            ROUTE.reset(token)


def show_bar(bar: Any) -> TextView:
    """Display a ``tqdm.notebook`` bar made with ``display=False``; refresh the view once it is closed, so that its
    text form is the final count (an unfinished ``leave=False`` bar leaves no text)."""
    def text() -> str:
        closed = bar.disable  # tqdm's close() disables the bar
        return "" if closed and not bar.leave else str(bar)

    view = TextView(bar.container, lambda: {"text/plain": text()})
    view.show()
    return view


def outputs_text(outputs: Iterable[dict[str, Any]], limit: int = 4000) -> str:
    """The text of an Output widget's outputs (streams, and the text/plain of displays), its last ``limit`` chars."""
    parts = []
    for output in outputs:
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        else:
            text = (output.get("data") or {}).get("text/plain")
            if text:
                parts.append(text if text.endswith("\n") else text + "\n")
    text = "".join(parts)
    return text if len(text) <= limit else "…" + text[-limit:]


class RunPanel:
    def __init__(self, record: RunRecord, *, on_cancel: Callable[[], bool], background: bool,
                 output: Any = None) -> None:
        """``on_cancel()`` returns whether the request reached a run that was still active."""
        import ipywidgets as widgets

        self.status = widgets.HTML()
        self.hint = widgets.HTML()
        self.cancel_button = widgets.Button(
            description="Cancel", icon="stop", layout=widgets.Layout(width="auto"),
            tooltip="Stop this run" if background else FOREGROUND_HINT,
        )
        def clicked(_button: Any) -> None:
            if not on_cancel():
                # The click arrived only after the run ended: this frontend does not deliver widget messages while a
                # cell runs, so say what does work.
                self.hint.value = f"<small>{html.escape(FOREGROUND_HINT)}</small>"

        self.cancel_button.on_click(clicked)
        if getattr(self.cancel_button, "comm", None) is not None:
            handle_comm_messages_where_they_arrive(self.cancel_button.comm)
        self.bars = widgets.VBox()
        self._bars: list[Any] = []  # the tqdm bars shown in self.bars
        self.output = (output or widgets.Output()) if background else None
        rows: list[Any] = [widgets.HBox([self.status, self.cancel_button]), self.hint, self.bars]
        if self.output is not None:
            rows.append(self.output)
        self.widget = widgets.VBox(rows)
        self.view = TextView(self.widget, lambda: {"text/plain": self.text()})
        self._final_shown = False
        self.record = record
        self.update(record)

    def show(self) -> None:
        self.view.show()

    def text(self) -> str:
        """What the panel shows, as text: the state line, the bars, and a background run's output."""
        lines = [describe(self.record), *(str(bar) for bar in self._bars)]
        text = "\n".join(lines)
        if self.output is not None and self.output.outputs:
            text += "\n" + outputs_text(self.output.outputs).rstrip("\n")
        return text

    def update(self, record: RunRecord) -> None:
        self.record = record
        colour = _COLOURS.get(record.state, "inherit")
        self.status.value = (f"<span style='font-family: var(--jp-code-font-family, monospace); color: {colour}'>"
                             f"{html.escape(describe(record))}</span>")
        if record.state.terminal:
            self.cancel_button.disabled = True
            if not self._final_shown:
                self._final_shown = True
                self.view.refresh()

    def attach(self, bar: Any) -> None:
        """Show a mirrored tqdm bar (a ``tqdm.notebook`` bar) in the panel."""
        self._bars.append(bar)
        self.bars.children = (*self.bars.children, bar.container)
