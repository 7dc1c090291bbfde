"""The harness itself, without kernels: limits quote the README, notebooks match their sources, the comparison
puts cells in the right category."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from .compare import CellSpec, NotebookComparison
from .limits import LIMITS
from .notebook_format import NOTEBOOKS, SOURCES, cell_specs, notebook_from_source, render
from .outputs import CellOutputs

README = Path(__file__).resolve().parents[2] / "README.md"


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("key", sorted(LIMITS))
def test_every_limit_quotes_the_readme(key: str) -> None:
    assert _words(LIMITS[key].readme) in _words(README.read_text()), (
        f"limit {key!r}: README.md no longer says {LIMITS[key].readme!r}; update tests/fidelity/limits.py")


@pytest.mark.parametrize("source", sorted(SOURCES.glob("*.py")), ids=lambda p: p.stem)
def test_notebook_is_built_from_its_source(source: Path) -> None:
    built = NOTEBOOKS / f"{source.stem}.ipynb"
    assert built.exists() and built.read_text() == render(source), (
        f"{built.name} is out of date: run `python -m tests.fidelity.notebook_format`")


def test_cell_options_become_metadata() -> None:
    nb = notebook_from_source('# fidelity: requires=torch\n# %%\nx = 1\n# %% limit=method-call-mutation '
                              'thither-args="--out xs"\nxs.append(1)\n# %% local\n%time 1\n# %% [markdown]\n# hi\n')
    specs = cell_specs(nb)
    assert nb.metadata["fidelity"]["requires"] == ["torch"]
    assert [s.limit for s in specs] == [None, "method-call-mutation", None]
    assert specs[1].thither_args == "--out xs" and specs[2].local
    assert nb.cells[3].cell_type == "markdown"


def test_unknown_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown limit"):
        notebook_from_source("# %% limit=no-such-limit\nx = 1\n")


def _digest(value: str) -> dict:
    return {"type": "builtins.str", "value": value}


def test_categories_first_inherited_and_limits() -> None:
    same = CellOutputs()
    comparison = NotebookComparison()
    plain, thither = {"a": _digest("1")}, {"a": _digest("1")}
    assert comparison.add(CellSpec(0, "a = 1"), same, same, plain, thither).category == "match"

    # a cell makes `b` differ: first difference
    report = comparison.add(CellSpec(1, "b = f()"), same, same, {**plain, "b": _digest("1")}, plain)
    assert (report.category, report.inherited) == ("differs", False)

    # a cell that does not mention b is not charged with it
    report = comparison.add(CellSpec(2, "c = a"), same, same, {**plain, "b": _digest("1")}, plain)
    assert report.category == "match"

    # a cell that reads b and prints something else inherits the difference
    report = comparison.add(CellSpec(3, "print(b)"), CellOutputs(stdout="1\n"), CellOutputs(error=["NameError", "b"]),
                            {**plain, "b": _digest("1")}, plain)
    assert (report.category, report.inherited) == ("differs", True)
    assert report.differences[0].inherited_from == 1

    # a limit cell's difference excuses the cells downstream of it, and only those
    comparison = NotebookComparison()
    comparison.add(CellSpec(0, "xs.append(1)", limit="method-call-mutation"), same, same,
                   {"xs": _digest("[1]")}, {"xs": _digest("[]")})
    report = comparison.add(CellSpec(1, "len(xs)"), CellOutputs(result={"text/plain": "1"}),
                            CellOutputs(result={"text/plain": "0"}), {"xs": _digest("[1]")}, {"xs": _digest("[]")})
    assert (report.category, report.inherited) == ("limit", True)


def test_tagged_limit_that_matches_is_flagged_stale() -> None:
    report = NotebookComparison().add(CellSpec(0, "x = 1", limit="method-call-mutation"), CellOutputs(),
                                      CellOutputs(), {}, {})
    assert report.category == "match" and "stale" in report.note


def test_committed_notebooks_are_valid() -> None:
    for path in NOTEBOOKS.glob("*.ipynb"):
        nbformat.validate(nbformat.read(path, as_version=4))
