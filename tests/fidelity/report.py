"""Per-notebook results: the table a person reads, the JSON a machine keeps, the failure message a test shows."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .compare import CellReport, short

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "fidelity"  # gitignored


@dataclass
class NotebookReport:
    name: str
    cells: list[CellReport] = field(default_factory=list)
    not_run: str | None = None  # why the notebook was not run (a missing optional library)
    seconds: float = 0.0

    def count(self, category: str, inherited: bool | None = None) -> int:
        return sum(1 for c in self.cells if c.category == category and inherited in (None, c.inherited))

    @property
    def differing(self) -> list[CellReport]:
        return [c for c in self.cells if c.category == "differs"]

    @property
    def match_rate(self) -> float:
        return 100.0 * self.count("match") / len(self.cells) if self.cells else 0.0

    def write_json(self, directory: Path = ARTIFACTS) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        data = asdict(self) | {"match_rate": round(self.match_rate, 1)}
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str))
        return path


HEADER = (f"{'notebook':<22} {'cells':>5} {'match':>5} {'limit':>5} {'nondet':>6} {'differs':>7} "
          f"{'(first/inherited)':>17} {'match %':>7} {'time':>6}")


def table(reports: list[NotebookReport]) -> str:
    lines = [HEADER, "-" * len(HEADER)]
    for r in reports:
        if r.not_run:
            lines.append(f"{r.name:<22} {r.not_run}")
            continue
        split = f"{r.count('differs', False)}/{r.count('differs', True)}"
        lines.append(f"{r.name:<22} {len(r.cells):>5} {r.count('match'):>5} {r.count('limit'):>5} "
                     f"{r.count('nondeterministic'):>6} {r.count('differs'):>7} {split:>17} "
                     f"{r.match_rate:>6.1f}% {r.seconds:>5.0f}s")
    return "\n".join(lines)


def describe_cells(cells: list[CellReport], width: int = 300, most: int = 8) -> str:
    """Each cell with its differences (the first ``most``), both sides shown: what a failing test prints."""
    blocks = []
    for cell in cells:
        kind = "inherited" if cell.inherited else "first"
        head = f"cell {cell.index} [{cell.category}, {kind}{', limit ' + cell.limit if cell.limit else ''}]"
        lines = [f"{head}: {cell.title}"]
        if cell.note:
            lines.append(f"    note: {cell.note}")
        if len(cell.differences) > most:
            lines.append(f"    ({len(cell.differences) - most} more differences in the JSON report)")
        for diff in cell.differences[:most]:
            origin = f" (since cell {diff.inherited_from})" if diff.inherited_from is not None else ""
            lines.append(f"    {diff.where}{origin}:")
            lines.append(f"        plain:   {short(diff.plain, width)}")
            lines.append(f"        thither: {short(diff.thither, width)}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
