"""Where a run's output goes: the cell that is executing, a background run's panel, a terminal, or a list.

The run session (mini_magic.session) hands every output event to an :class:`OutputSink` and never knows which one;
tests and benchmarks use :class:`ListSink`.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

from ._ipykernel import publish_execute_result
from .routing import append_display, append_stream


class OutputSink(Protocol):
    """Where a run's output goes (the notebook cell, a background run's panel, or a test's list)."""

    def stdout(self, text: str) -> None: ...
    def stderr(self, text: str) -> None: ...
    def display(self, data: dict[str, Any], metadata: dict[str, Any], display_id: str | None, update: bool) -> None: ...
    def clear_output(self, wait: bool) -> None: ...
    def show_value(self, value: Any, data: dict[str, Any] | None = None,
                   metadata: dict[str, Any] | None = None) -> None: ...
    def show_bundle(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None: ...
    def flush(self) -> None: ...


class NotebookSink:
    """Writes a run's output into the cell that is executing, as if the cell had produced it."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self._unflushed = False

    def stdout(self, text: str) -> None:
        sys.stdout.write(text)
        self._unflushed = True

    def stderr(self, text: str) -> None:
        sys.stderr.write(text)
        self._unflushed = True

    def display(self, data: dict[str, Any], metadata: dict[str, Any], display_id: str | None, update: bool) -> None:
        transient = {"display_id": display_id} if display_id else None
        self.shell.display_pub.publish(data=data, metadata=metadata, transient=transient, update=update)

    def clear_output(self, wait: bool) -> None:
        from IPython.display import clear_output

        clear_output(wait=wait)

    def show_value(self, value: Any, data: dict[str, Any] | None = None,
                   metadata: dict[str, Any] | None = None) -> None:
        """The cell's result: ``Out[n]``, ``_``, ``__``, ``___`` hold ``value``; what shows is ``data`` when given.

        ``data`` is the bundle the worker formatted (its printoptions, pandas options and rcParams applied, as they
        apply to its ``print``); it is published through the displayhook's own steps, so the execute_result
        message, the prompt number, the output cache and the history are the kernel's own.
        """
        if data is None:
            self.shell.displayhook(value)
            return
        publish_execute_result(self.shell, value, data, metadata)

    def show_bundle(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        """A trailing value that could not travel: only its display (no ``Out[n]`` to hold it)."""
        self.shell.display_pub.publish(data=data, metadata=metadata or {})

    def flush(self) -> None:
        # ipykernel's flush waits for its IO thread; skip it when this run wrote nothing.
        if self._unflushed:
            self._unflushed = False
            sys.stdout.flush()
            sys.stderr.flush()


class PanelSink:
    """Writes a background run's remote output into its panel's Output widget (thread-safe trait updates)."""

    def __init__(self, output: Any, shell: Any) -> None:
        self.output = output
        self.shell = shell
        self._display_index: dict[str, int] = {}

    def stdout(self, text: str) -> None:
        append_stream(self.output, "stdout", text)

    def stderr(self, text: str) -> None:
        append_stream(self.output, "stderr", text)

    def display(self, data: dict[str, Any], metadata: dict[str, Any], display_id: str | None, update: bool) -> None:
        if update and display_id in self._display_index:
            outputs = list(self.output.outputs)
            outputs[self._display_index[display_id]] = {"output_type": "display_data", "data": data,
                                                        "metadata": metadata}
            self.output.outputs = tuple(outputs)
            return
        if display_id:
            self._display_index[display_id] = len(self.output.outputs)
        append_display(self.output, data, metadata)

    def clear_output(self, wait: bool) -> None:
        self.output.outputs = ()
        self._display_index.clear()

    def show_value(self, value: Any, data: dict[str, Any] | None = None,
                   metadata: dict[str, Any] | None = None) -> None:
        """As the worker formatted it (``data``), else as this kernel formats it."""
        if data is None:
            data, metadata = self.shell.display_formatter.format(value)
        append_display(self.output, data, metadata)

    def show_bundle(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        append_display(self.output, data, metadata)

    def flush(self) -> None:
        pass


class TerminalSink(NotebookSink):
    """A background run's output in a terminal IPython (no widgets): written to the terminal as it arrives, as a
    shell job's is. Its trailing value is shown as a display, never through the displayhook (no ``Out[n]``: the
    prompt has moved on)."""

    def show_value(self, value: Any, data: dict[str, Any] | None = None,
                   metadata: dict[str, Any] | None = None) -> None:
        if data is None:
            data, metadata = self.shell.display_formatter.format(value)
        self.show_bundle(data, metadata)


class ListSink:
    """A run's output kept as a list of ``(kind, payload)`` in :attr:`outputs` (tests, benchmarks, scripts without
    IPython). Subclass it to act on one kind of output: a new kind of output then needs no change to the subclass."""

    def __init__(self) -> None:
        self.outputs: list[tuple[str, Any]] = []

    def stdout(self, text: str) -> None:
        self.outputs.append(("stdout", text))

    def stderr(self, text: str) -> None:
        self.outputs.append(("stderr", text))

    def display(self, data: dict[str, Any], metadata: dict[str, Any], display_id: str | None, update: bool) -> None:
        self.outputs.append(("display", (data, metadata, display_id, update)))

    def clear_output(self, wait: bool) -> None:
        self.outputs.append(("clear_output", wait))

    def show_value(self, value: Any, data: dict[str, Any] | None = None,
                   metadata: dict[str, Any] | None = None) -> None:
        self.outputs.append(("value", (value, data, metadata)))

    def show_bundle(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        self.outputs.append(("bundle", (data, metadata)))

    def flush(self) -> None:
        pass


class StreamSink:
    """A run's output in a process without IPython (a plain script calling ``@thither`` functions): text written to
    ``sys.stdout``/``sys.stderr`` as it arrives, displays and results as their ``text/plain``."""

    def stdout(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def stderr(self, text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    def display(self, data: dict[str, Any], metadata: dict[str, Any], display_id: str | None, update: bool) -> None:
        self.show_bundle(data, metadata)

    def clear_output(self, wait: bool) -> None:
        pass

    def show_value(self, value: Any, data: dict[str, Any] | None = None,
                   metadata: dict[str, Any] | None = None) -> None:
        self.show_bundle(data or {"text/plain": repr(value)}, metadata)

    def show_bundle(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        text = data.get("text/plain")
        if text:
            self.stdout(str(text) + "\n")

    def flush(self) -> None:
        pass


class LineSink:
    """One of several concurrent runs writing into one sink (the items of a ``.map``): their text is passed on in
    whole lines, so that two items' prints never mix within a line; what is left of a line goes on at
    :meth:`flush` (the run's end). Everything else goes straight through."""

    def __init__(self, sink: OutputSink) -> None:
        self._sink = sink
        self._partial = {"stdout": "", "stderr": ""}

    def _write(self, stream: str, text: str) -> None:
        text = self._partial[stream] + text
        cut = text.rfind("\n") + 1
        self._partial[stream] = text[cut:]
        if cut:
            getattr(self._sink, stream)(text[:cut])

    def stdout(self, text: str) -> None:
        self._write("stdout", text)

    def stderr(self, text: str) -> None:
        self._write("stderr", text)

    def flush(self) -> None:
        for stream, text in self._partial.items():
            if text:
                self._partial[stream] = ""
                getattr(self._sink, stream)(text)
        self._sink.flush()

    def __getattr__(self, name: str) -> Any:  # display, clear_output, show_value, show_bundle
        return getattr(self._sink, name)
