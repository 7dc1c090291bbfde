"""Run a notebook cell by cell in a plain kernel and under ``%%thither``; compare after every cell.

    python -m tests.fidelity.runner [NOTEBOOK.ipynb ...]    (default: every notebook in tests/fidelity/notebooks)

prints the per-notebook table and every cell that is not a match, and writes test-artifacts/fidelity/<name>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import nbformat

from .compare import CellSpec, NotebookComparison
from .kernel_pair import KernelPair
from .notebook_format import NOTEBOOKS, cell_specs, requirements
from .outputs import summarize
from .report import NotebookReport, describe_cells, table

CELL_TIMEOUT = 120.0


def thither_source(spec: CellSpec) -> str:
    if spec.local:
        return spec.source
    return f"%%thither {spec.thither_args}".rstrip() + "\n" + spec.source


def run_notebook(path: Path, cell_timeout: float = CELL_TIMEOUT) -> NotebookReport:
    nb = nbformat.read(path, as_version=4)
    report = NotebookReport(path.stem)
    missing = [name for name in requirements(nb) if importlib.util.find_spec(name) is None]
    if missing:
        report.not_run = f"not run ({', '.join(missing)} absent)"
        return report
    started = time.monotonic()
    comparison = NotebookComparison()
    with KernelPair() as pair:
        for spec in cell_specs(nb):
            plain, thither = pair.run_cell(spec.source, thither_source(spec), cell_timeout)
            plain_ns, thither_ns = pair.fingerprints()
            report.cells.append(comparison.add(spec, summarize(plain), summarize(thither), plain_ns, thither_ns))
            if plain.timed_out or thither.timed_out:
                break  # a kernel that did not finish a cell cannot be trusted with the next one
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    reports = []
    for path in args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb")):
        report = run_notebook(path)
        report.write_json()
        reports.append(report)
        print(f"== {report.name}: {report.not_run or f'{report.match_rate:.1f}% match'}", file=sys.stderr)
        shown = [c for c in report.cells if c.category != "match" or c.note]
        if shown:
            print(describe_cells(shown), file=sys.stderr)
    print(table(reports))
    return 1 if any(r.differing for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
