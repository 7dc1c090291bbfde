"""A ``%%thither`` cell shows what the same cell shows when run in the kernel (figures and the trailing value).

The reference is a normal ipykernel cell with the matplotlib-inline backend: a figure the cell made is displayed once
at the end of the cell and closed, also when the cell raised; the trailing value is formatted by the process whose
library options apply (numpy printoptions, pandas options, rcParams) and ``Out[n]``/``_`` hold the value itself.
Consecutive local cells run on the same warm worker; the tests print the worker's pid to make sure of it.
"""

from __future__ import annotations

import re

from .conftest import CellResult
from .test_background import execute, panel_of
from .test_cells import cell, ok, traceback_text

PID = "import os; print('PID', os.getpid())"


def pid_of(result: CellResult) -> int:
    match = re.search(r"PID (\d+)", result.stdout)
    assert match, result.outputs
    return int(match.group(1))


def pngs(result: CellResult, output_type: str) -> list[str]:
    return [d["image/png"] for d in result.data(output_type) if "image/png" in d]


def test_figures_show_at_the_end_of_their_own_cell_only_also_when_it_raised(run_notebook):
    cells = run_notebook([
        cell(f"""
            %%thither
            {PID}
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots()
            ax.plot([1, 2])
            raise ValueError("after plotting")
        """),
        f"%%thither\n{PID}\nx = 1",
        cell(f"""
            %%thither
            {PID}
            import matplotlib.pyplot as plt
            plt.plot([3, 1]);
        """),
        cell(f"""
            %%thither
            {PID}
            import matplotlib.pyplot as plt
            plt.ioff()
            hidden = plt.figure()
            plt.plot([5, 5]);
        """),
        cell(f"""
            %%thither
            {PID}
            import matplotlib.pyplot as plt
            plt.plot([2, 4]);
        """),
    ])
    failed, quiet, plotted, not_shown, after = cells
    assert "ValueError: after plotting" in traceback_text(failed)
    # As in a kernel cell that raised: its figure is displayed (once) and closed.
    assert len(pngs(failed, "display_data")) == 1, failed.outputs
    pids = {pid_of(failed)}
    for later in (quiet, plotted, not_shown, after):
        ok(later)
        pids.add(pid_of(later))
    assert len(pids) == 1, "the cells did not all run on the same warm worker"
    assert quiet.data() == [], "a figure of an earlier run appeared in a later one"
    # A later run's figure shows at the end of its cell (interactive mode is the kernel's, run after run) ...
    assert len(pngs(plotted, "display_data")) == 1, plotted.outputs
    # ... a figure the cell chose not to show stays unshown, and never appears in another run.
    assert not_shown.data() == [], not_shown.outputs
    assert len(pngs(after, "display_data")) == 1, after.outputs
    assert after.data("display_data")[0]["image/png"] != pngs(plotted, "display_data")[0]


def test_figures_render_as_images_here_and_there(run_notebook):
    cells = run_notebook([
        cell("""
            %%thither
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots()
            ax.plot([1, 2])
            fig
        """),
        "import sys\nprint('matplotlib.pyplot' in sys.modules, ax.figure is fig)",
        "fig",
        "ax.set_title('updated here')\nfig",
        "%%thither\nax.set_title('updated there')\nfig",
        "print('matplotlib.pyplot' in sys.modules)",
    ])
    made, check, shown, updated, remote, check_after = cells
    # A trailing fig: the image as its result (and the figure the cell made, shown at its end, as in a kernel).
    (result,) = made.data("execute_result")
    assert "image/png" in result, made.outputs
    assert len(pngs(made, "display_data")) == 1, made.outputs
    # The pair came back usable, in a kernel that never imported pyplot: figures still render as images.
    assert ok(check) == "False True\n"
    (first,) = pngs(shown, "execute_result")
    (second,) = pngs(updated, "execute_result")
    assert second != first, "the title set here did not change the figure shown"
    ok(remote)
    (third,) = pngs(remote, "execute_result")
    assert third not in (first, second), "the title set in the worker did not change the figure shown"
    assert ok(check_after) == "False\n", "showing a figure imported pyplot in the kernel"


def test_trailing_value_shows_as_formatted_where_it_ran_while_out_holds_the_value(run_notebook):
    cells = run_notebook([
        "%%thither\nimport numpy as np\nnp.set_printoptions(precision=2)",
        "%%thither\na = np.array([1.23456])\nprint(a)\na",
        "print(type(_).__name__, float(_[0]), _ is Out[max(Out)], _ is a)",
        "%%thither\na;",
        "print(float(_[0]))",
        cell("""
            %%thither
            class Plain:
                def __repr__(self):
                    return "Plain(repr)"
            Plain()
        """),
        "print(type(_).__name__, repr(_))",
    ])
    settings, shown, check, quiet, check_quiet, plain_value, check_plain = cells
    ok(settings)
    assert ok(shown) == "[1.23]\n"
    (result,) = shown.data("execute_result")
    assert result["text/plain"] == "array([1.23])", "the worker's printoptions do not apply to the cell's result"
    assert ok(check) == "ndarray 1.23456 True False\n", "Out/_ must hold the value itself, unrounded"
    ok(quiet)
    assert quiet.data() == [], "a trailing ';' must suppress the result"
    assert ok(check_quiet) == "1.23456\n"
    ok(plain_value)
    (result,) = plain_value.data("execute_result")
    assert result == {"text/plain": "Plain(repr)"}, result
    assert ok(check_plain) == "Plain Plain(repr)\n"


def test_background_run_shows_its_value_as_formatted_where_it_ran(workdir):
    cells, widgets = execute(workdir, [
        "%%thither\nimport numpy as np\nnp.set_printoptions(precision=2)",
        "%%thither --bg --name job\nnp.array([1.23456])",
        "job.wait(30)\nprint(job.state)",
    ])
    settings, submit, waited = cells
    ok(settings)
    assert ok(waited) == "done\n"
    panel = panel_of(submit, widgets)
    shown = [o["data"]["text/plain"] for o in panel.outputs if o.get("output_type") == "display_data"]
    assert shown == ["array([1.23])"], panel.outputs
