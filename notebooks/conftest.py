"""pytest --nbval-lax notebooks/: the example notebooks run top to bottom in a real kernel.

nbval checks the outputs of the cells tagged ``nbval-check-output`` against the committed ones (so a notebook whose
committed outputs went stale fails), after the substitutions in nbval_sanitize.cfg; every other cell must run
without an error unless it is tagged ``raises-exception``. Runs go to a temporary run store, not the user's.

modal.ipynb: without a real Modal token (``MODAL_TOKEN_ID`` or ``~/.modal.toml``) its cells run against the
project's offline fake control plane (tests/modal/fake_modal: the real ``modal`` client and container runtime), and
the cells tagged ``modal-token`` (a real GPU, an image build) are skipped with a message that says why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

TOKEN_TAG = "modal-token"


def _real_modal_token() -> bool:
    return bool(os.environ.get("MODAL_TOKEN_ID")) or (Path.home() / ".modal.toml").exists()


def pytest_configure(config):
    home = tempfile.mkdtemp(prefix="mini-magic-nbval-")
    config._mini_magic_home = home
    os.environ["MINI_MAGIC_HOME"] = home
    os.environ.pop("MINI_MAGIC_BACKEND", None)
    config._mini_magic_fake_modal = None
    if not _real_modal_token() and any("modal" in Path(arg).name or Path(arg).is_dir() for arg in config.args):
        import mini_magic
        from tests.modal.fake_modal import FakeModal

        fake = FakeModal(container_packages=[str(Path(mini_magic.__file__).parent)]).start()
        config._mini_magic_fake_modal = fake
        os.environ.update(fake.client_env())  # the kernels nbval starts inherit it


def pytest_collection_modifyitems(config, items):
    if config._mini_magic_fake_modal is None:
        return
    skip = pytest.mark.skip(reason="needs real Modal (a GPU or an image build): run `modal token new` first; "
                                   "the other cells ran against the offline fake control plane")
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is not None and TOKEN_TAG in cell.get("metadata", {}).get("tags", []):
            item.add_marker(skip)


def pytest_unconfigure(config):
    fake = getattr(config, "_mini_magic_fake_modal", None)
    if fake is not None:
        fake.stop()
    home = getattr(config, "_mini_magic_home", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)
