"""``%%thither`` in a terminal IPython (TerminalInteractiveShell, no kernel, no widgets): plain text output."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import kernel_env

pytestmark = pytest.mark.slow

SESSION = textwrap.dedent('''
    from IPython.terminal.interactiveshell import TerminalInteractiveShell

    shell = TerminalInteractiveShell.instance(colors="NoColor")
    cells = [
        "%load_ext mini_magic",
        """%%thither --gpu any
    from tqdm import tqdm
    for i in tqdm(range(5), desc="steps"):
        pass
    x = 41 + 1
    print("remote says", x)
    x""",
        "print('local x', x)",
        "%%thither --bg --name job\\nimport time\\ntime.sleep(0.3)\\nprint('background says hi')\\ny = 5",
        "job.wait(); print('job', job.state, job.result()['y'])",
        "%thither runs --all",
    ]
    for cell in cells:
        print(f"In [{shell.execution_count}]: {cell}", flush=True)
        result = shell.run_cell(cell, store_history=True)
        if not result.success:
            raise SystemExit(f"cell failed: {result.error_in_exec or result.error_before_exec!r}")
    shell.run_line_magic("unload_ext", "mini_magic")
''')


def test_a_terminal_ipython_gets_plain_text(workdir: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SESSION], cwd=workdir, env=kernel_env(workdir), capture_output=True,
                          text=True, timeout=120)
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, out + err
    assert "remote says 42" in out and "Out[2]: 42" in out and "local x 42" in out
    assert "ThitherWarning: --gpu any" in err and "%%thither:0:" not in err
    assert "steps: 100%" in err and "5/5" in err  # a text tqdm bar, not a notebook widget
    # A background run writes to the terminal as it arrives, and says how it ended.
    assert "background says hi" in out and "background run 'job': ✔ done · local" in err
    assert "job done 5" in out
    header = next(line for line in out.splitlines() if line.startswith("RUN "))
    assert header.split() == ["RUN", "STATE", "BACKEND", "KERNEL", "TIME", "CELL", "REASON"]
    for widget_repr in ("Box(children", "HTML(value", "FloatProgress(", "Output(", "Button("):
        assert widget_repr not in out + err
