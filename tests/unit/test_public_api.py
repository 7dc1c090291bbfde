"""The public surface is exactly what mini_magic.__all__ lists, and importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import mini_magic


def test_every_public_name_resolves() -> None:
    for name in mini_magic.__all__:
        assert getattr(mini_magic, name) is not None, name


def test_errors_share_one_root() -> None:
    for name in ("CaptureError", "ProtocolMismatch", "RemoteError", "RunCancelled", "RunTimeout",
                 "ThitherUsageError", "WorkerCrashed"):
        assert issubclass(getattr(mini_magic, name), mini_magic.MiniMagicError), name


def test_importing_the_package_does_not_import_ipython() -> None:
    code = "import sys, mini_magic; print('IPython' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_importing_the_function_apis_stays_light() -> None:
    """A script's first line must not pay for IPython, ipywidgets or asyncio: they load when a call runs."""
    code = ("import sys; from mini_magic import thither, gather, guard, invoke, invoke_async; "
            "print(sorted(m for m in ('IPython', 'ipywidgets', 'asyncio', 'cloudpickle') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
