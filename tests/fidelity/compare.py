"""Compare one cell's two runs and put the cell in a category.

Categories: ``match`` (same outputs, same namespace digest), ``limit`` (tagged with a documented limit and
different), ``nondeterministic`` (tagged: its outputs are not expected to repeat), ``differs`` (anything else: a
fidelity defect).

A difference is *first* in the cell that makes it, and *inherited* in a later cell that only carries it: a name
the cell mentions whose two digests differ in the same way as after the previous cell, or an output difference in
a cell that mentions a name already differing. A carried difference in a name the cell does not mention is not the
cell's (it is still tracked, and shows again in the next cell that uses the name). An inherited difference keeps the category of the cell it came from, so the cell after
a tagged limit is excused by that limit, and the cell after a defect is reported as ``differs (inherited)``, apart
from the cell that shows the defect first.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .outputs import CellOutputs

IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
OUTPUT_FIELDS = ("error", "stdout", "stderr", "displays", "result", "timed_out")


@dataclass
class CellSpec:
    index: int  # position among the notebook's code cells
    source: str
    local: bool = False  # runs unprefixed in both kernels (magics, cells tagged fidelity:local)
    limit: str | None = None
    nondeterministic: bool = False
    thither_args: str = ""

    @property
    def title(self) -> str:
        lines = [line for line in self.source.splitlines() if line.strip() and not line.startswith("#")]
        return (lines[0] if lines else self.source.strip())[:70]


@dataclass
class Difference:
    where: str  # an output field, or "name <x>"
    plain: Any
    thither: Any
    inherited_from: int | None = None  # the cell that made this difference first


@dataclass
class CellReport:
    index: int
    title: str
    source: str
    category: str
    inherited: bool = False
    limit: str | None = None
    note: str = ""
    differences: list[Difference] = field(default_factory=list)


@dataclass
class _Carried:
    plain: Any
    thither: Any
    origin: int
    category: str


class NotebookComparison:
    """Walks a notebook's cells in order, remembering which names differ and since when."""

    def __init__(self) -> None:
        self._differing: dict[str, _Carried] = {}

    def add(self, spec: CellSpec, plain: CellOutputs, thither: CellOutputs, plain_ns: dict[str, Any],
            thither_ns: dict[str, Any]) -> CellReport:
        mentioned = set(IDENTIFIER.findall(spec.source))
        upstream = {name: c for name, c in self._differing.items() if name in mentioned}
        output_diffs = _output_differences(plain, thither)
        fresh, carried = self._namespace_differences(spec, plain_ns, thither_ns)
        carried = [d for d in carried if _name(d) in mentioned]  # a cell answers only for the names it uses
        report = CellReport(spec.index, spec.title, spec.source, "match", limit=spec.limit)
        report.differences = output_diffs + fresh + carried
        own_category = "nondeterministic" if spec.nondeterministic else "limit" if spec.limit else "differs"
        if not report.differences:
            if spec.limit:
                report.note = f"tagged {spec.limit!r} but matched: the tag may be stale"
        elif fresh or (output_diffs and not upstream):
            report.category = own_category
        else:  # only names that already differed, or output differences a name that already differed explains
            origins = {self._differing[_name(d)].category for d in carried} | {c.category for c in upstream.values()}
            report.category = own_category if own_category != "differs" else _worst(origins)
            report.inherited = True
            if output_diffs:
                first = min(c.origin for c in upstream.values())
                for diff in output_diffs:
                    diff.inherited_from = first
        for diff in fresh:
            self._differing[_name(diff)].category = report.category
        return report

    def _namespace_differences(self, spec: CellSpec, plain_ns: dict[str, Any], thither_ns: dict[str, Any],
                               ) -> tuple[list[Difference], list[Difference]]:
        """(new differences, differences carried unchanged from the cell before); updates what differs now."""
        fresh, carried = [], []
        now: dict[str, _Carried] = {}
        for name in sorted(set(plain_ns) | set(thither_ns)):
            left, right = plain_ns.get(name), thither_ns.get(name)
            if left == right:
                continue
            shown_left, shown_right = _delta(left, right)
            before = self._differing.get(name)
            if before is not None and (before.plain, before.thither) == (left, right):
                now[name] = before
                carried.append(Difference(f"name {name}", shown_left, shown_right, before.origin))
            else:
                now[name] = _Carried(left, right, spec.index, "differs")
                fresh.append(Difference(f"name {name}", shown_left, shown_right))
        self._differing = now
        return fresh, carried


def _name(diff: Difference) -> str:
    return diff.where[len("name "):]


def _worst(categories: set[str]) -> str:
    for category in ("differs", "limit", "nondeterministic"):
        if category in categories:
            return category
    return "differs"


def _output_differences(plain: CellOutputs, thither: CellOutputs) -> list[Difference]:
    left, right = plain.as_dict(), thither.as_dict()
    return [Difference(name, left[name], right[name]) for name in OUTPUT_FIELDS if left[name] != right[name]]


def _delta(left: Any, right: Any) -> tuple[Any, Any]:
    """Only the keys of two digests that differ: what a reader needs to see the difference."""
    if not (isinstance(left, dict) and isinstance(right, dict)):
        return _absent(left), _absent(right)
    keys = sorted(k for k in set(left) | set(right) if left.get(k) != right.get(k))
    if "type" not in keys:
        keys.insert(0, "type")
    return ({k: left.get(k) for k in keys}, {k: right.get(k) for k in keys})


def _absent(value: Any) -> Any:
    return "<absent>" if value is None else value


def short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"
