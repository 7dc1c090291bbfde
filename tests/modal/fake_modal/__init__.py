"""Offline fake of Modal's control plane for tests (targets modal==1.6.4).

Usage::

    from tests.modal.fake_modal import FakeModal, modal_client_env

    with FakeModal() as fake, modal_client_env(fake):
        app = modal.App()
        f = app.function(serialized=True)(lambda x: x * 2)
        with app.run():
            assert f.remote(21) == 42
        assert "FunctionMap" in fake.calls
"""

from .server import FakeModal, modal_client_env
from .servicer import ALL_RPCS, ContainerRecord, FakeServicer, FakeState

__all__ = ["ALL_RPCS", "ContainerRecord", "FakeModal", "FakeServicer", "FakeState", "modal_client_env"]
