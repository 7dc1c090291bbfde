"""Fixtures for tests that drive the real `modal` client against the offline fake control plane."""

from __future__ import annotations

from pathlib import Path

import pytest

import mini_magic

from .fake_modal import FakeModal
from .fake_modal.server import CLIENT_ENV_KEYS, _reset_modal_client


@pytest.fixture(scope="package")
def fake_modal_server():
    """One fake control plane (gRPC + blob server on 127.0.0.1) for the whole tests/modal package."""
    # mini_magic reaches real containers through the image's add_local_python_source; the fake does not ship
    # mounts, so it links the package into its containers instead (they still cannot see the tests or the repo).
    fake = FakeModal(container_packages=[str(Path(mini_magic.__file__).parent)]).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_modal(fake_modal_server: FakeModal, monkeypatch: pytest.MonkeyPatch):
    """The running fake, with the process env pointing the real modal client at it for this test.

    Fails the test if any fake RPC handler crashed while it ran.
    """
    for key in CLIENT_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in fake_modal_server.client_env().items():
        monkeypatch.setenv(key, value)
    _reset_modal_client()
    n_errors = len(fake_modal_server.errors)
    yield fake_modal_server
    _reset_modal_client()
    new_errors = fake_modal_server.errors[n_errors:]
    assert not new_errors, "fake control plane handler crashed:\n" + "\n".join(new_errors)


# Real-kernel fixtures shared with the local-backend suite.
from tests.kernel.conftest import live_kernel, run_notebook, spare_kernels, workdir  # noqa: E402,F401
