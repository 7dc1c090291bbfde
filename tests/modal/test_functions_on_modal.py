"""``@thither`` functions on the Modal backend: the plain script of tests/kernel/test_functions_script.py with
``backend="modal"``, its real modal client pointed at the offline fake control plane (the container runtime runs
the same worker code as a local worker). A map's items are spawned Modal calls, several in flight at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernel.test_functions_script import check_script, run_script

pytestmark = pytest.mark.slow


def test_a_plain_script_calls_thither_functions_every_way_on_modal(fake_modal, tmp_path: Path) -> None:
    out, stdout, stderr = run_script(tmp_path, "modal", timeout=420)
    check_script(out, stdout, stderr)
