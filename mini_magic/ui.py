"""The compact run panel shown in a cell: state, backend/GPU, elapsed time, a Cancel button, and — for a background
run — its own output area and progress bars.

Widgets are created on the kernel's main thread (creating widgets from other threads is unreliable); afterwards
only traits are set, which is safe from any thread (ipykernel queues the messages on its IO thread).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

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


def handle_messages_where_they_arrive(comm: Any) -> None:
    """Let a comm's incoming messages be handled on the kernel subshell they arrive on.

    ipykernel ≥ 7.4 routes a comm's incoming messages to the shell that last *published* on it, so that replies
    reach the thread waiting for them. For a comm the running cell publishes on (its panel's Cancel button, the
    status comm) that is the busy main shell, and a Cancel JupyterLab sends over a subshell would wait until the
    cell ends — too late. Overriding that (private) routing hook on this one comm restores delivery by subshell;
    ipykernel versions without the hook never call it, and nothing changes there.
    """
    comm._reply_subshell_for = lambda data, default: default


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
            handle_messages_where_they_arrive(self.cancel_button.comm)
        self.bars = widgets.VBox()
        self.output = (output or widgets.Output()) if background else None
        rows: list[Any] = [widgets.HBox([self.status, self.cancel_button]), self.hint, self.bars]
        if self.output is not None:
            rows.append(self.output)
        self.widget = widgets.VBox(rows)
        self.update(record)

    def show(self) -> None:
        from IPython.display import display

        display(self.widget)

    def update(self, record: RunRecord) -> None:
        colour = _COLOURS.get(record.state, "inherit")
        self.status.value = (f"<span style='font-family: var(--jp-code-font-family, monospace); color: {colour}'>"
                             f"{html.escape(describe(record))}</span>")
        if record.state.terminal:
            self.cancel_button.disabled = True

    def attach(self, widget: Any) -> None:
        self.bars.children = (*self.bars.children, widget)
