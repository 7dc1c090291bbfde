"""The committed example notebooks are executed, readable without a kernel, and tell nbval what to check.

nbval (``pytest --nbval-lax notebooks/`` in .ci/test) re-executes them and compares the checked cells with these
committed outputs; this test makes sure there is something to compare: a notebook saved without outputs, or with no
checked cell, would pass nbval while checking nothing.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
EXPECTED = ["functions.ipynb", "live-training.ipynb", "modal.ipynb", "quickstart.ipynb"]
CHECK = "nbval-check-output"


def test_the_four_example_notebooks_are_there() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb") if ".executed." not in p.name) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_a_committed_notebook_is_executed_and_has_checked_cells(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    skipped = [c for c in code if "modal-token" in c.metadata.get("tags", [])]  # need real Modal: not run here
    for cell in code:
        if cell in skipped:
            continue
        assert cell.execution_count is not None, f"{name}: saved without running this cell:\n{cell.source}"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        expected_error = "raises-exception" in cell.metadata.get("tags", [])
        assert bool(errors) == expected_error, f"{name}: unexpected outcome of\n{cell.source}"
    checked = [c for c in code if CHECK in c.metadata.get("tags", [])]
    assert checked, f"{name}: no cell is tagged {CHECK}: nbval would check nothing"
    assert all(c.outputs for c in checked), f"{name}: a checked cell has no committed output to compare"
