"""Offline: the resource spec a cell's options give the runner function (no server, no token)."""

from __future__ import annotations

import modal

from mini_magic.worker import modal as container_entry
from mini_magic.options import RunOptions
from mini_magic.backends.modal import DEFAULT_TIMEOUT, bind_resources


def runner() -> modal.Function:
    return modal.App("spec").function(name="mini_magic_runner")(container_entry.run_job)


def test_gpu_timeout_and_volumes_reach_the_function_spec() -> None:
    options = RunOptions(backend="modal", gpu="A100-80GB:2", timeout=7200, volumes=(("ckpt", "/ckpt"),))
    bound, volumes = bind_resources(modal, runner(), options)
    info = bound.info()
    assert info.gpus == [("A100-80GB", 2)]
    assert info.timeout == 7200
    assert len(volumes) == 1 and "/ckpt" in {str(path) for path in info.volumes}


def test_default_timeout_is_a_day_not_modals_five_minutes() -> None:
    bound, _ = bind_resources(modal, runner(), RunOptions(backend="modal"))
    assert bound.info().timeout == DEFAULT_TIMEOUT == 86400
