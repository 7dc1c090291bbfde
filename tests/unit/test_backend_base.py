"""The Backend seam's defaults: what a backend that implements only ``submit`` answers to the kernel's other calls."""

from __future__ import annotations

import pytest

from mini_magic.backends.base import Backend, RunHandle
from mini_magic.errors import ThitherUsageError
from mini_magic.options import RunOptions
from mini_magic.wire import Job


class SubmitOnly(Backend):
    name = "submit-only"

    def submit(self, job: Job, options: RunOptions) -> RunHandle:
        raise AssertionError("not called here")


def test_attach_by_default_refuses_naming_the_backend_and_the_run() -> None:
    with pytest.raises(ThitherUsageError, match=r"attach run1: the submit-only backend cannot reattach runs"):
        SubmitOnly().attach("remote-1", "run1")


def test_prewarm_by_default_does_nothing() -> None:
    assert SubmitOnly().prewarm(RunOptions(backend="submit-only")) is None
