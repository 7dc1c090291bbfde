"""The worker's display bridge ends a run as a kernel cell ends, and formats the trailing value as the kernel's
displayhook would; the kernel's sink shows that bundle as the cell's result while Out/_ hold the value.

Each check runs in a fresh interpreter (IPython's shell is a process-wide singleton; pyplot state is global)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def run(body: str) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(body)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


BRIDGE = """
import json, sys
from mini_magic.worker import display as worker_display
events = []
bridge = worker_display.install(lambda kind, **fields: events.append((kind.__name__, sorted(fields["data"]))),
                                lambda: None)
"""


def test_a_run_shows_its_figures_once_at_its_end_and_the_next_run_starts_clean():
    got = run(BRIDGE + """
import matplotlib
inline = None

def one_run(cell):
    events.clear()
    bridge.before_run()
    cell()
    bridge.after_run()
    bridge.after_run()  # once per run: the error path may call it again
    shown = list(events)
    # What the worker's restore does after every run: close all figures, put rcParams (interactive too) back.
    plt.close("all")
    matplotlib.interactive(False)
    return shown

def plot():
    plt.plot([1, 2])

def hidden():
    plt.ioff()
    plt.figure()
    plt.plot([1, 2])

bridge.before_run()
import matplotlib.pyplot as plt
bridge.after_run()
first = one_run(plot)
second = one_run(plot)
# A run that ended without post_execute (interrupted) leaves the inline backend's "draw called" flag set.
sys.modules["matplotlib_inline.backend_inline"].show._draw_called = True
third = one_run(hidden)
print(json.dumps({"first": first, "second": second, "third": third}))
""")
    shown = [["Display", ["image/png", "text/plain"]]]
    assert got == {"first": shown, "second": shown, "third": []}


def test_the_trailing_value_is_formatted_as_text_safe_data_and_a_broken_repr_does_not_fail_the_run():
    got = run(BRIDGE + """
class Png:
    def _repr_png_(self):
        return b"\\x89PNG-bytes"
    def __repr__(self):
        return "Png()"

class Broken:
    def __repr__(self):
        raise RuntimeError("no repr")

import numpy as np
np.set_printoptions(precision=2)
data, metadata = bridge.format_result(Png())
array, _ = bridge.format_result(np.array([1.23456]))
bridge.shell = None  # a bare remote image: the object's own reprs
broken = bridge.format_result(Broken())
print(json.dumps({"png": data["image/png"], "text": data["text/plain"], "array": array["text/plain"],
                  "broken": broken}))
""")
    assert got == {"png": "iVBORy1ieXRlcw==", "text": "Png()", "array": "array([1.23])", "broken": None}


def test_the_notebook_sink_shows_the_bundle_while_out_and_underscore_hold_the_value():
    got = run("""
import json
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config
from mini_magic.sinks import NotebookSink

config = Config()
config.HistoryManager.enabled = False
shell = InteractiveShell.instance(config=config)
value = [1.23456]
import io, contextlib
out = io.StringIO()
with contextlib.redirect_stdout(out):
    NotebookSink(shell).show_value(value, {"text/plain": "[1.23]"}, {})
print(json.dumps({"shown": out.getvalue(), "out": [v is value for v in shell.user_ns["_oh"].values()] == [True],
                  "underscore": shell.user_ns["_"] is value}))
""")
    assert got["out"] and got["underscore"], got
    assert "[1.23]" in got["shown"] and "1.23456" not in got["shown"], got
