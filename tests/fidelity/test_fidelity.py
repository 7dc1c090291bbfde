"""Every notebook in tests/fidelity/notebooks does the same under %%thither as in a plain kernel.

A cell that differs fails its notebook's test, and the message shows both sides of every difference. Cells tagged
with a documented limit (limits.py) or as nondeterministic are reported, not failed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import REPORTS
from .notebook_format import NOTEBOOKS
from .report import describe_cells, table
from .runner import run_notebook

pytestmark = [pytest.mark.slow, pytest.mark.fidelity]

NOTEBOOK_PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[p.stem for p in NOTEBOOK_PATHS])
def test_notebook_matches_under_thither(path: Path, request: pytest.FixtureRequest) -> None:
    report = run_notebook(path)
    REPORTS.append(report)
    request.config.fidelity_reports = [*getattr(request.config, "fidelity_reports", []), report]
    report.write_json()
    if report.not_run:
        pytest.skip(f"{report.name}: {report.not_run}")
    if report.differing:
        pytest.fail(f"{len(report.differing)} of {len(report.cells)} cells differ under %%thither\n"
                    f"{table([report])}\n\n{describe_cells(report.differing)}", pytrace=False)
