"""Guards, ``invoke`` and a one-call pipeline on the Modal backend, against the offline fake control plane: the
plain scripts of tests/kernel/test_guards_invoke_script.py with ``backend="modal"``. The pipeline is ONE spawned
Modal call (one FunctionMap) although its ``.map`` has four items: inside the container they run on its threads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernel.test_guards_invoke_script import check_guards, check_invoke, check_pipeline

pytestmark = pytest.mark.slow


def test_guards_run_around_calls_in_order_on_modal(fake_modal, tmp_path: Path) -> None:
    check_guards(tmp_path, "modal")


def test_invoke_runs_a_function_of_a_file_on_modal(fake_modal, tmp_path: Path) -> None:
    check_invoke(tmp_path, "modal")


def test_a_pipeline_is_one_modal_call_on_modal(fake_modal, tmp_path: Path) -> None:
    mark = fake_modal.mark()
    check_pipeline(tmp_path, "modal")
    calls = fake_modal.calls_since(mark)
    # local run: one call per item of its map (4); the remote pipeline: one call; run again: one more
    assert calls.count("FunctionMap") == 4 + 1 + 1, [c for c in calls if c.startswith("Function")]
