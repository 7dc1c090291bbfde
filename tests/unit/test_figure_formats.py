"""figure_formats: a Figure that arrived renders as an image without pyplot, and only where nothing decided otherwise.

Each check runs in a fresh interpreter: which matplotlib modules are imported is the very condition under test, and
IPython's shell is a process-wide singleton.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PRELUDE = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config
from mini_magic import figure_formats

class KernelLikeShell(InteractiveShell):
    kernel = object()  # what figure_formats looks for: a shell whose displays reach a notebook

def new_shell(config=None):
    config = config or Config()
    config.HistoryManager.enabled = False
    return KernelLikeShell.instance(config=config)

def figure():
    from matplotlib.figure import Figure
    fig = Figure()
    fig.add_subplot().plot([1, 2])
    return fig
"""


def run(body: str) -> dict:
    script = PRELUDE + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_arrived_figure_renders_as_png_without_importing_pyplot():
    got = run("""
        shell = new_shell()
        before = figure_formats.enable(shell)  # no Figure class loaded yet: nothing to do
        fig = figure()
        enabled = figure_formats.enable(shell)
        data, _ = shell.display_formatter.format(fig)
        print(json.dumps({"before": before, "enabled": enabled, "again": figure_formats.enable(shell),
                          "mimes": sorted(data), "pyplot": "matplotlib.pyplot" in sys.modules,
                          "inline": "matplotlib_inline" in sys.modules}))
    """)
    assert got == {"before": False, "enabled": True, "again": False, "mimes": ["image/png", "text/plain"],
                   "pyplot": False, "inline": False}


def test_the_configured_inline_backend_formats_apply():
    got = run("""
        config = Config()
        config.InlineBackend.figure_formats = {"svg"}
        shell = new_shell(config)
        fig = figure()
        figure_formats.enable(shell)
        data, _ = shell.display_formatter.format(fig)
        print(json.dumps(sorted(data)))
    """)
    assert got == ["image/svg+xml", "text/plain"]


def test_a_users_own_figure_formatter_wins():
    got = run("""
        shell = new_shell()
        fig = figure()
        shell.display_formatter.formatters["image/png"].for_type(type(fig), lambda f: None)
        print(json.dumps({"enabled": figure_formats.enable(shell), "mimes": sorted(shell.display_formatter.format(fig)[0])}))
    """)
    assert got == {"enabled": False, "mimes": ["text/plain"]}


def test_nothing_changes_once_pyplot_is_imported_or_without_a_notebook():
    got = run("""
        config = Config()
        config.HistoryManager.enabled = False
        plain = InteractiveShell.instance(config=config)  # a terminal-like shell: shows text anyway
        fig = figure()
        terminal = figure_formats.enable(plain)
        import matplotlib.pyplot  # its own integration decides from now on
        InteractiveShell.clear_instance()
        print(json.dumps({"terminal": terminal, "with_pyplot": figure_formats.enable(new_shell())}))
    """)
    assert got == {"terminal": False, "with_pyplot": False}
