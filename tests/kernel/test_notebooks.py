"""The quickstart notebook, run top to bottom in a real kernel, shows what it promises, also without widgets.

Every example notebook (this one too) also runs under nbval in .ci/test (``pytest --nbval-lax notebooks/``), which
compares its checked cells with the committed outputs; this test adds what nbval cannot see: the outputs that
vary from run to run (values that came back, bars, plots, panels) and how the notebook reads in nbconvert.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from .conftest import kernel_env

NOTEBOOKS = [Path(__file__).parents[2] / "notebooks" / "quickstart.ipynb"]


def execute(path: Path, workdir: Path) -> nbformat.NotebookNode:
    shutil.copy(path, workdir / path.name)
    nb = nbformat.read(workdir / path.name, as_version=4)
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(workdir), env=kernel_env(workdir))
    try:
        NotebookClient(nb, km=km, timeout=120, allow_errors=True).execute()
    finally:
        km.shutdown_kernel(now=True)
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, workdir: Path) -> None:
    nb = execute(path, workdir)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if "raises-exception" in cell.metadata.get("tags", []):
            assert errors, f"cell was expected to raise:\n{cell.source}"
        else:
            assert not errors, f"cell failed:\n{cell.source}\n{errors[0].ename}: {errors[0].evalue}"
    if path.name == "quickstart.ipynb":
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        text = "\n".join(o.get("text", "") for o in outputs)
        assert "learned weights [ 1.999 -0.999  0.5  ]" in text  # results of the remote training came back
        assert "{'run': 'demo'" in text  # --env reached the worker, --out brought `summary` back
        assert any("image/png" in o.get("data", {}) for o in outputs), "the remote figure did not come back"
        assert "100 calls arrived" in text  # every hither call of the remote loop reached the kernel
        assert "done {" in text and "'answer': 42" in text  # the background run finished with its result
        assert_reads_well_without_widgets(nb)


WIDGET_REPRS = ("Box(children", "HTML(value", "Image(value", "FloatProgress(", "Output(", "Button(")


def assert_reads_well_without_widgets(nb: nbformat.NotebookNode) -> None:
    """What nbconvert, GitHub's notebook view or an editor without widgets shows: text, never a widget's repr."""
    from nbconvert import MarkdownExporter

    text, _ = MarkdownExporter().from_notebook_node(nb)
    for widget_repr in WIDGET_REPRS:
        assert widget_repr not in text, f"a widget shows as its repr ({widget_repr}…) without a widget manager"
    assert "epochs: 100%" in text and "100/100" in text and "| 0/100" not in text  # the bar's final state
    plots = [o.data for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if o.get("data", {}).get("text/plain", "").startswith("live plot: live training loss")]
    assert plots and "image/png" in plots[0]  # the live plot's final figure, and its text
    assert plots[0]["text/plain"] == "live plot: live training loss (loss; 100 points)"
    assert "✔ done · local" in text and "background step 2" in text  # the background run's panel, finished
    assert "ThitherWarning: --gpu any" in text and "%%thither:0:" not in text
