"""What ``%load_ext`` does with the default backend: prewarm it only if it has something to prewarm."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mini_magic import extension
from mini_magic.backends.base import Backend, RunHandle
from mini_magic.options import RunOptions
from mini_magic.wire import Job


class Cold(Backend):
    name = "cold"

    def submit(self, job: Job, options: RunOptions) -> RunHandle:
        raise AssertionError("not called here")


class Warm(Cold):
    name = "warm"
    warmed: list[RunOptions] = []

    def prewarm(self, options: RunOptions) -> None:
        self.warmed.append(options)


def state_for(backend: str, *, prewarm: bool = True) -> tuple[Any, list[str]]:
    created: list[str] = []

    def create(name: str) -> Backend:
        created.append(name)
        return {"cold": Cold, "warm": Warm}[name]()

    config = SimpleNamespace(backend=backend, prewarm=prewarm, gpu="L4", env={"A": "1"})
    return SimpleNamespace(config=config, backend=create), created


@pytest.fixture(autouse=True)
def backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extension, "backend_classes", lambda: {"cold": Cold, "warm": Warm})
    Warm.warmed = []


def test_a_backend_that_prewarms_is_created_and_prewarmed_with_the_configured_defaults() -> None:
    state, created = state_for("warm")
    extension._prewarm_default_backend(state)
    assert created == ["warm"]
    assert Warm.warmed == [RunOptions(backend="warm", gpu="L4", env={"A": "1"})]


@pytest.mark.parametrize(("backend", "prewarm"), [("cold", True), ("warm", False), ("unknown", True)])
def test_no_backend_is_created_when_there_is_nothing_to_prewarm(backend: str, prewarm: bool) -> None:
    state, created = state_for(backend, prewarm=prewarm)
    extension._prewarm_default_backend(state)
    assert created == [] and Warm.warmed == []
