"""Two real kernels driven message by message: a plain one and one whose cells run under ``%%thither``.

Both kernels load mini_magic (so the only difference between them is the cell prefix), each has its own working
directory and run store, and each cell is submitted to both before either is collected, so the pair costs about
the time of the slower side.
"""

from __future__ import annotations

import ast
import json
import queue
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from tests.kernel.conftest import kernel_env

FINGERPRINT_SOURCE = Path(__file__).with_name("fingerprint.py")
FINGERPRINT_MODULE = "_fidelity_fingerprint"

# Loads fingerprint.py as a module that lives only in sys.modules: the user namespace gains no name, the history no
# entry, and under %%thither nothing could capture it by accident.
_INSTALL_FINGERPRINT = f"""
def _fidelity_install():
    import sys, types
    module = types.ModuleType({FINGERPRINT_MODULE!r})
    with open({str(FINGERPRINT_SOURCE)!r}) as source:
        exec(compile(source.read(), {str(FINGERPRINT_SOURCE)!r}, "exec"), module.__dict__)
    sys.modules[module.__name__] = module
_fidelity_install()
del _fidelity_install
"""
_FINGERPRINT_EXPRESSION = f"__import__('sys').modules[{FINGERPRINT_MODULE!r}].fingerprint(get_ipython().user_ns)"


@dataclass
class RawCell:
    """What one kernel sent for one execute request, in order, with the reply's status."""

    outputs: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"
    timed_out: bool = False


class DrivenKernel:
    """One kernel in its own temporary directory; ``submit`` then ``collect`` one cell at a time."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._tmp = tempfile.TemporaryDirectory(prefix=f"fidelity-{label}-")
        workdir = Path(self._tmp.name)
        (workdir / "home").mkdir()
        # IPC sockets in the private directory: no TCP port another test on this machine could race for.
        self.km = KernelManager(kernel_name="python3", transport="ipc", ip=str(workdir / "kernel"))
        self.km.start_kernel(cwd=str(workdir), env=kernel_env(workdir))
        self.client = self.km.blocking_client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def submit(self, code: str, *, silent: bool = False, user_expressions: dict[str, str] | None = None) -> str:
        return self.client.execute(code, silent=silent, store_history=not silent,
                                   user_expressions=user_expressions or {}, allow_stdin=False)

    def collect(self, msg_id: str, timeout: float) -> tuple[RawCell, dict[str, Any]]:
        """The cell's iopub outputs until it goes idle, and its execute_reply content."""
        cell = RawCell()
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            if time.monotonic() > deadline:
                cell.timed_out = True
                return cell, {}
            try:
                msg = self.client.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status":
                idle = content["execution_state"] == "idle"
            elif kind in ("stream", "error", "display_data", "execute_result", "update_display_data",
                          "clear_output"):
                cell.outputs.append({"output_type": kind, **content})
        reply = self._reply(msg_id, max(1.0, deadline - time.monotonic()))
        cell.status = reply.get("status", "missing")
        return cell, reply

    def _reply(self, msg_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.client.get_shell_msg(timeout=0.5)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]
        return {}

    def run(self, code: str, timeout: float = 60, **kwargs: Any) -> tuple[RawCell, dict[str, Any]]:
        return self.collect(self.submit(code, **kwargs), timeout)

    def install_fingerprint(self) -> None:
        cell, _ = self.run(_INSTALL_FINGERPRINT, silent=True)
        errors = [o for o in cell.outputs if o["output_type"] == "error"]
        if errors or cell.status != "ok":
            raise RuntimeError(f"{self.label}: installing the fingerprint helper failed: {errors or cell.status}")

    def submit_fingerprint(self) -> str:
        return self.submit("", silent=True, user_expressions={"fp": _FINGERPRINT_EXPRESSION})

    def collect_fingerprint(self, msg_id: str, timeout: float = 60) -> dict[str, Any]:
        _, reply = self.collect(msg_id, timeout)
        result = reply.get("user_expressions", {}).get("fp", {})
        if result.get("status") != "ok":
            return {"__error__": f"{result.get('ename')}: {result.get('evalue')}"}
        return json.loads(ast.literal_eval(result["data"]["text/plain"]))

    def close(self) -> None:
        try:
            self.client.stop_channels()
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=True)
        finally:
            self._tmp.cleanup()


class KernelPair:
    """The reference kernel (``plain``) and the kernel under test (``thither``), both with mini_magic loaded."""

    def __init__(self) -> None:
        with ThreadPoolExecutor(2) as pool:
            starting = [pool.submit(DrivenKernel, label) for label in ("plain", "thither")]
        failed = [f.exception() for f in starting if f.exception() is not None]
        if failed:
            for f in starting:
                if f.exception() is None:
                    f.result().close()
            raise failed[0]
        kernels = [f.result() for f in starting]
        self.plain, self.thither = kernels
        for kernel in kernels:
            setup, _ = kernel.run("%load_ext mini_magic")
            if any(o["output_type"] == "error" for o in setup.outputs):
                self.close()
                raise RuntimeError(f"{kernel.label}: %load_ext mini_magic failed: {setup.outputs}")
            kernel.install_fingerprint()

    def run_cell(self, plain_code: str, thither_code: str, timeout: float) -> tuple[RawCell, RawCell]:
        ids = (self.plain.submit(plain_code), self.thither.submit(thither_code))
        return self.plain.collect(ids[0], timeout)[0], self.thither.collect(ids[1], timeout)[0]

    def fingerprints(self) -> tuple[dict[str, Any], dict[str, Any]]:
        ids = (self.plain.submit_fingerprint(), self.thither.submit_fingerprint())
        return self.plain.collect_fingerprint(ids[0]), self.thither.collect_fingerprint(ids[1])

    def close(self) -> None:
        for kernel in (self.plain, self.thither):
            kernel.close()

    def __enter__(self) -> KernelPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
