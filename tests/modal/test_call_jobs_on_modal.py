"""Call jobs on the Modal backend, driven in this process against the offline fake control plane: the real modal
client submits them and the real container runtime runs the same worker code as a local worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mini_magic.backends.modal import ModalBackend
from mini_magic.options import RunOptions
from mini_magic.runs import RunRegistry, RunState
from tests.kernel.test_call_jobs import call, cell_and_call_share_the_session, notebook

pytestmark = pytest.mark.slow


@pytest.fixture
def modal_backend(fake_modal) -> Iterator[ModalBackend]:
    backend = ModalBackend()
    yield backend
    backend.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunRegistry]:
    registry = RunRegistry(tmp_path / "runs.db", kernel_id="k")
    yield registry
    registry.close()


def test_a_call_returns_its_value_and_a_generator_streams_on_modal(modal_backend: ModalBackend,
                                                                     registry: RunRegistry, tmp_path: Path) -> None:
    nb = notebook()
    options = RunOptions(backend="modal", timeout=120)
    assert call(modal_backend, registry, nb["scaled"], 4, offset=2, options=options).returned == 42
    gate = tmp_path / "go"  # the container runs on this machine and sees the path
    items: list[Any] = []

    def on_yield(item: Any) -> None:
        items.append(item)
        if item == 0:
            gate.touch()

    result = call(modal_backend, registry, nb["produce"], str(gate), options=options, on_yield=on_yield)
    assert items == [0, 1, {"two": 10}] and result.returned == "done"
    assert all(r.state is RunState.DONE for r in registry.recent())


def test_a_cell_job_and_a_call_job_share_the_session_path_on_modal(modal_backend: ModalBackend,
                                                                   registry: RunRegistry) -> None:
    cell_and_call_share_the_session(modal_backend, registry)
