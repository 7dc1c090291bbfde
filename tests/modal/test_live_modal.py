"""The cell suite against REAL Modal, when a token is configured (MODAL_TOKEN_ID); skipped with the reason
otherwise. Nothing here talks to the fake control plane."""

from __future__ import annotations

import os

import pytest

from tests.kernel import test_cells as local_suite

LIVE = bool(os.environ.get("MODAL_TOKEN_ID")) and not os.environ.get("MODAL_SERVER_URL", "").startswith(
    "http://127.0.0.1")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LIVE, reason="live Modal suite: set MODAL_TOKEN_ID/MODAL_TOKEN_SECRET to run it"),
]

SHARED = ("test_closure_captures_values_functions_classes_modules_and_nested_uses",
          "test_results_come_back", "test_errors_come_back_with_type_message_and_notebook_lines",
          "test_output_streams_from_python_subprocesses_and_c", "test_local_modules_travel_as_source_and_are_never_stale")


@pytest.fixture
def run_notebook(run_notebook):
    def run(cells, **kwargs):
        env = {"MINI_MAGIC_BACKEND": "modal", **(kwargs.pop("env", None) or {})}
        kwargs.setdefault("timeout", 600)
        return run_notebook(cells, env=env, **kwargs)

    return run


for _name in SHARED:
    globals()[_name] = getattr(local_suite, _name)
