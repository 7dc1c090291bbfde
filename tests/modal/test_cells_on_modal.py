"""The local backend's cell suite (tests/kernel/test_cells.py), run again with every ``%%thither`` cell on the
Modal backend: the kernel's default backend is set to modal and the real client talks to the fake control plane."""

from __future__ import annotations

import pytest

from tests.kernel import test_cells as local_suite

pytestmark = pytest.mark.slow

# Tests about local-only behaviour or about choosing backends themselves.
LOCAL_ONLY = {
    "test_backend_precedence_flag_over_config_over_environment",  # sets MINI_MAGIC_BACKEND itself
    "test_update_display_sends_update_display_data",  # uses a live kernel, not the notebook runner
    "test_options_help_env_backend_gpu_and_timeout",  # expects the local backend's "no GPU visible" warning
}


@pytest.fixture
def run_notebook(run_notebook, fake_modal):
    def run(cells, **kwargs):
        env = {**fake_modal.client_env(), "MINI_MAGIC_BACKEND": "modal", **(kwargs.pop("env", None) or {})}
        kwargs.setdefault("timeout", 120)
        return run_notebook(cells, env=env, **kwargs)

    return run


for _name in dir(local_suite):
    if _name.startswith("test_") and _name not in LOCAL_ONLY:
        globals()[_name] = getattr(local_suite, _name)
