"""The fidelity notebooks: written as readable percent-format sources, run from the .ipynb made of them.

A source (``sources/<name>.py``) is cells separated by ``# %%`` lines; options follow on the same line::

    # %% limit=method-call-mutation            the cell differs because of a documented limit (limits.py)
    # %% thither-args="--out model"            the %%thither side runs `%%thither --out model`
    # %% local                                 runs unprefixed in both kernels
    # %% nondeterministic                      its outputs are not expected to repeat
    # %% [markdown]                            a markdown cell: its lines without the leading "# "

Lines before the first ``# %%`` of the form ``# fidelity: requires=torch,other`` set notebook metadata. The
options become cell metadata (``fidelity-limit``, ``fidelity-thither-args``) and tags (``fidelity:local``,
``fidelity:nondeterministic``), so the .ipynb is self-contained and can be edited in Jupyter too.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import nbformat

from .compare import CellSpec
from .limits import LIMITS

HERE = Path(__file__).parent
SOURCES = HERE / "sources"
NOTEBOOKS = HERE / "notebooks"


def notebook_from_source(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    requires: list[str] = []
    header: str | None = None
    body: list[str] = []

    def flush() -> None:
        if header is not None:
            nb.cells.append(_cell(header, body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            header, body = line[len("# %%"):].strip(), []
        elif header is None:
            if line.startswith("# fidelity: requires="):
                requires += [r.strip() for r in line.split("=", 1)[1].split(",") if r.strip()]
        else:
            body.append(line)
    flush()
    nb.metadata["fidelity"] = {"requires": requires}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"  # stable ids: regenerating gives the same file
    return nb


def _cell(header: str, lines: list[str]) -> nbformat.NotebookNode:
    while lines and not lines[-1].strip():
        lines.pop()
    if header == "[markdown]":
        return nbformat.v4.new_markdown_cell("\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                                                       for line in lines))
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    tags = []
    for option in shlex.split(header):
        key, _, value = option.partition("=")
        if key == "limit":
            if value not in LIMITS:
                raise ValueError(f"unknown limit {value!r}: add it to tests/fidelity/limits.py with README wording")
            cell.metadata["fidelity-limit"] = value
        elif key == "thither-args":
            cell.metadata["fidelity-thither-args"] = value
        elif key in ("local", "nondeterministic"):
            tags.append(f"fidelity:{key}")
        else:
            raise ValueError(f"unknown cell option {option!r}")
    if tags:
        cell.metadata["tags"] = tags
    return cell


def cell_specs(nb: nbformat.NotebookNode) -> list[CellSpec]:
    specs = []
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        tags = cell.metadata.get("tags", [])
        first = next(line for line in cell.source.splitlines() if line.strip())
        specs.append(CellSpec(
            index=len(specs), source=cell.source,
            local="fidelity:local" in tags or first.lstrip().startswith("%"),
            limit=cell.metadata.get("fidelity-limit"),
            nondeterministic="fidelity:nondeterministic" in tags,
            thither_args=cell.metadata.get("fidelity-thither-args", ""),
        ))
    return specs


def requirements(nb: nbformat.NotebookNode) -> list[str]:
    meta: Any = nb.metadata.get("fidelity", {})
    return list(meta.get("requires", []))


def build_all() -> list[Path]:
    """Write notebooks/<name>.ipynb for every sources/<name>.py; returns the paths written."""
    NOTEBOOKS.mkdir(exist_ok=True)
    written = []
    for source in sorted(SOURCES.glob("*.py")):
        target = NOTEBOOKS / f"{source.stem}.ipynb"
        target.write_text(render(source))
        written.append(target)
    return written


def render(source: Path) -> str:
    return nbformat.writes(notebook_from_source(source.read_text())) + "\n"


if __name__ == "__main__":  # python -m tests.fidelity.notebook_format
    for path in build_all():
        print(path.relative_to(HERE.parent.parent))
