"""Real kernels for integration tests: nbclient for whole notebooks, jupyter_client for interrupts.

Every kernel runs in its own temporary working directory with its own run store ($MINI_MAGIC_HOME), so tests do not
see each other's files, local modules or runs.
"""

from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

pytestmark = pytest.mark.slow


@dataclass
class CellResult:
    """The outputs of one executed cell, flattened for assertions."""

    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(o["text"] for o in self.outputs if o.get("output_type") == "stream" and o["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(o["text"] for o in self.outputs if o.get("output_type") == "stream" and o["name"] == "stderr")

    @property
    def error(self) -> dict[str, Any] | None:
        return next((o for o in self.outputs if o.get("output_type") == "error"), None)

    def data(self, output_type: str | None = None) -> list[dict[str, Any]]:
        return [o.get("data", {}) for o in self.outputs if output_type in (None, o.get("output_type"))
                and "data" in o]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path


def kernel_env(workdir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["MINI_MAGIC_HOME"] = str(workdir / "home")
    env.pop("MINI_MAGIC_BACKEND", None)
    env.update(extra)
    return env


WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


class SpareKernels:
    """A kernel started one test ahead, so that its ~1 s of booting overlaps the previous test instead of adding to it.

    The real-kernel suites are bound by kernel starts (start + wait_for_ready is most of a short test) while the
    tests themselves leave the CPUs idle two thirds of the time. A spare kernel is started with the suite's default
    environment in a directory of its own; taking it moves it into the test's working directory and run store
    (``os.chdir`` and ``$MINI_MAGIC_HOME``, silently: no execution count, no history, no names), before the test
    loads the extension. A test that needs other environment variables at start (its own ``env``, or the test
    process's environment changed since the spare started, e.g. by monkeypatch) gets a kernel of its own.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._spare: tuple[KernelManager, dict[str, str]] | None = None

    def _start(self) -> KernelManager:
        cwd = self._root / f"spare-{time.monotonic_ns()}"
        (cwd / "home").mkdir(parents=True)
        km = KernelManager(kernel_name="python3")
        km.start_kernel(cwd=str(cwd), env=kernel_env(cwd))
        return km

    def take(self, workdir: Path, env: dict[str, str] | None) -> KernelManager:
        if env:
            km = KernelManager(kernel_name="python3")
            km.start_kernel(cwd=str(workdir), env=kernel_env(workdir, **env))
            return km
        spare, self._spare = self._spare, None
        if spare is not None and (spare[1] != dict(os.environ) or not spare[0].is_alive()):
            spare[0].shutdown_kernel(now=True)
            spare = None
        km = spare[0] if spare is not None else self._start()
        self._spare = (self._start(), dict(os.environ))
        move_kernel(km, workdir)
        return km

    def close(self) -> None:
        if self._spare is not None and self._spare[0].has_kernel:
            self._spare[0].shutdown_kernel(now=True)


def move_kernel(km: KernelManager, workdir: Path) -> None:
    """Point a started kernel at ``workdir``: its working directory and its run store, as if started there."""
    code = (f"__import__('os').chdir({str(workdir)!r}); "
            f"__import__('os').environ['MINI_MAGIC_HOME'] = {str(workdir / 'home')!r}")
    client = km.blocking_client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(code, silent=True, store_history=False, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()


@pytest.fixture(scope="session")
def spare_kernels(tmp_path_factory: pytest.TempPathFactory):
    spares = SpareKernels(tmp_path_factory.mktemp("spare-kernels"))
    yield spares
    spares.close()


def execute_notebook(workdir: Path, cells: list[str], *, allow_errors: bool = True, timeout: int = 60,
                     env: dict | None = None, load: bool = True, spares: SpareKernels | None = None,
                     ) -> tuple[list[CellResult], dict[str, Any]]:
    """Run ``%load_ext mini_magic`` (unless ``load`` is False) then ``cells`` in a fresh kernel via nbclient.

    Returns one CellResult per given cell, and the final widget state nbclient recorded
    (model_id -> {"model_name", "state", ["buffers"]}).
    """
    sources = (["%load_ext mini_magic"] if load else []) + list(cells)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in sources])
    if spares is not None:
        km = spares.take(workdir, env)
    else:
        km = KernelManager(kernel_name="python3")
        km.start_kernel(cwd=str(workdir), env=kernel_env(workdir, **(env or {})))
    try:
        NotebookClient(nb, km=km, timeout=timeout, allow_errors=allow_errors).execute()
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    results = [CellResult(list(c.outputs)) for c in nb.cells]
    if load:
        assert results[0].error is None, results[0].outputs
        results = results[1:]
    widgets = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return results, widgets


@pytest.fixture
def run_notebook(workdir: Path, spare_kernels: SpareKernels):
    """run_notebook(cells, allow_errors=True, timeout=60, env=None) -> list[CellResult], one per cell."""

    def run(cells: list[str], **kwargs: Any) -> list[CellResult]:
        return execute_notebook(workdir, cells, spares=spare_kernels, **kwargs)[0]

    return run


class LiveKernel:
    """A kernel driven message by message, for interrupts and timing-sensitive checks."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, spares: SpareKernels | None = None) -> None:
        if spares is not None:
            self.km = spares.take(workdir, env)
        else:
            self.km = KernelManager(kernel_name="python3")
            self.km.start_kernel(cwd=str(workdir), env=kernel_env(workdir, **(env or {})))
        self.client = self.km.blocking_client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def submit(self, code: str) -> str:
        return self.client.execute(code)

    def iopub(self, timeout: float):
        """Every iopub message, whatever cell it belongs to, until ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                yield self.client.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                continue

    def messages(self, msg_id: str, timeout: float):
        """iopub messages of one cell, until ``timeout``."""
        return (msg for msg in self.iopub(timeout) if msg["parent_header"].get("msg_id") == msg_id)

    def until_idle(self, msg_id: str, timeout: float = 30) -> list[dict]:
        """Every iopub message (of any cell) until the cell ``msg_id`` goes idle."""
        seen = []
        for msg in self.iopub(timeout):
            seen.append(msg)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status" \
                    and msg["content"]["execution_state"] == "idle":
                return seen
        raise TimeoutError(f"cell {msg_id} did not go idle within {timeout} s")

    def collect(self, msg_id: str, timeout: float = 60) -> CellResult:
        """Wait for the cell to go idle; return its outputs."""
        result = CellResult()
        for msg in self.messages(msg_id, timeout):
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                return result
            if kind == "stream":
                result.outputs.append({"output_type": "stream", "name": content["name"], "text": content["text"]})
            elif kind == "error":
                result.outputs.append({"output_type": "error", **content})
            elif kind in ("display_data", "execute_result", "update_display_data"):
                result.outputs.append({"output_type": kind, "data": content["data"],
                                       "transient": content.get("transient", {})})
            elif kind == "clear_output":
                result.outputs.append({"output_type": "clear_output", "wait": content["wait"]})
        raise TimeoutError(f"cell {msg_id} did not finish within {timeout} s")

    def run(self, code: str, timeout: float = 60) -> CellResult:
        return self.collect(self.submit(code), timeout)

    def wait_for_stdout(self, msg_id: str, text: str, timeout: float = 30) -> CellResult:
        """Read iopub until the cell printed ``text`` (the cell keeps running)."""
        result = CellResult()
        for msg in self.messages(msg_id, timeout):
            if msg["msg_type"] == "stream":
                result.outputs.append({"output_type": "stream", "name": msg["content"]["name"],
                                       "text": msg["content"]["text"]})
                if text in result.stdout:
                    return result
        raise TimeoutError(f"{text!r} did not appear within {timeout} s; got {result.stdout!r}")

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def close(self) -> None:
        self.client.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=True)


@pytest.fixture
def live_kernel(workdir: Path, spare_kernels: SpareKernels):
    kernels: list[LiveKernel] = []

    def start(env: dict[str, str] | None = None, load: bool = True, fresh: bool = False) -> LiveKernel:
        """fresh: a kernel started in ``workdir`` itself, not a spare moved there (a restart relaunches a kernel
        where and how it was first started)."""
        kernel = LiveKernel(workdir, env, None if fresh else spare_kernels)
        kernels.append(kernel)
        if load:
            result = kernel.run("%load_ext mini_magic")
            assert result.error is None, result.error
        return kernel

    yield start
    for kernel in kernels:
        kernel.close()
