"""The lowest-versions environment of .ci/test installs exactly the lower bounds pyproject.toml declares."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _declared_lower_bounds() -> dict[str, str]:
    # A small parse instead of tomllib, which the lowest supported Python (3.10) lacks.
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    assert block, "pyproject.toml has no dependencies list"
    bounds = {}
    for requirement in re.findall(r'"([^"]+)"', block.group(1)):
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        assert match, f"{requirement!r}: declare core dependencies as NAME>=LOWEST so that the lowest is tested"
        bounds[match.group(1).lower()] = match.group(2)
    return bounds


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower()] = version
    return pins


def _release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def test_lowest_constraints_pin_every_declared_lower_bound() -> None:
    declared = _declared_lower_bounds()
    pinned = _pins(ROOT / ".ci" / "lowest.txt")
    assert set(pinned) == set(declared)
    for name, bound in declared.items():
        assert _release(pinned[name]) == _release(bound), f"{name}: pyproject says >={bound}, .ci/lowest.txt {pinned[name]}"


def test_the_lowest_environment_uses_the_lowest_supported_python() -> None:
    requires = re.search(r'^requires-python = ">=([0-9.]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert requires
    assert f'LOWEST_PYTHON="{requires.group(1)}"' in (ROOT / ".ci" / "test").read_text()
