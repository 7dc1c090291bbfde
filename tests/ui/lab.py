"""A real JupyterLab server and real-browser helpers for the UI tests.

Kept apart from conftest.py so tests can import the helpers (``from tests.ui.lab import run_cell``) and so the
server can be started by hand when debugging: ``with start_lab_server(Path("/tmp/lab")) as s: print(s.url)``.

Isolation: each server gets its own HOME, JUPYTER_CONFIG_DIR, JUPYTER_DATA_DIR, JUPYTER_RUNTIME_DIR, IPYTHONDIR,
app settings dir and MINI_MAGIC_HOME, so neither the user's config nor earlier runs leak in. The default data path
still contains ``sys.prefix/share/jupyter``, so labextensions installed into the venv (ours included) are loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbformat
import psutil
from ipykernel.kernelspec import write_kernel_spec

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
CHROMIUM = os.environ.get("MINI_MAGIC_CHROMIUM", "/usr/bin/chromium")
# Headless Debian chromium in a container: no sandbox (no user namespaces), no GPU, and nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# Generous: a cold server plus the first Lab page load (~5 MB of JS) takes a while on a slow 2-core CI machine.
SERVER_START_TIMEOUT_S = 90
NOTEBOOK_OPEN_TIMEOUT_MS = 90_000
CELL_TIMEOUT_MS = 60_000

KERNELS_SETTINGS = "@jupyterlab/apputils-extension:kernels-settings"
NOTIFICATION_SETTINGS = "@jupyterlab/apputils-extension:notification"

# Settings overrides every test server gets: no "get official Jupyter news?" toast, no update check.
QUIET_SETTINGS: dict[str, dict[str, Any]] = {NOTIFICATION_SETTINGS: {"fetchNews": "false", "checkForUpdates": False}}
# JupyterLab >= 4.4 sends comm messages to kernel subshells by default; this turns that off (the pre-4.4 behaviour).
NO_SUBSHELLS: dict[str, dict[str, Any]] = {KERNELS_SETTINGS: {"commsOverSubshells": "disabled"}}


def _merge(base: dict, extra: dict) -> dict:
    """Deep-merge ``extra`` into a copy of ``base`` (nested dicts merge, everything else replaces)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class LabServer:
    """A running ``jupyter lab`` subprocess and what a test needs to talk to it."""

    url: str  # ends with "/"
    token: str
    root_dir: Path
    log_path: Path
    process: subprocess.Popen

    def api(self, path: str, method: str = "GET") -> Any:
        """Call the server's REST API (``path`` relative to the base URL) and decode the JSON reply."""
        request = urllib.request.Request(self.url + path.lstrip("/"), method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def setting(self, plugin_id: str, key: str) -> Any:
        """The value the frontend will use for one setting, read back through ``/lab/api/settings``.

        The user's value if one is saved, else the schema default -- which the server has already replaced with
        the value from ``overrides.json``. That is exactly how the frontend computes the "composite" value.
        """
        reply = self.api(f"lab/api/settings/{plugin_id}")
        user = reply.get("settings") or {}
        return user[key] if key in user else reply["schema"]["properties"][key]["default"]

    def lab_url(self, path: str = "", workspace: str | None = None) -> str:
        """A URL that opens ``path`` in a fresh, empty workspace, so no tab from an earlier test is restored."""
        workspace = workspace or f"t{uuid.uuid4().hex[:12]}"
        tree = f"/tree/{quote(path)}" if path else ""
        return f"{self.url}lab/workspaces/{workspace}{tree}?token={self.token}"

    def notebook7_url(self, path: str) -> str:
        """Where Jupyter Notebook 7 (a server started with ``app="notebook"``) opens the notebook ``path``."""
        return f"{self.url}notebooks/{quote(path)}?token={self.token}"

    def log_tail(self, lines: int = 200) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def start_lab_server(base_dir: Path, settings: dict | None = None, config: dict | None = None,
                     env: dict[str, str] | None = None, app: str = "jupyterlab") -> Iterator[LabServer]:
    """Start ``jupyter lab`` in an isolated environment under ``base_dir``; stop it (and its kernels) on exit.

    app: the frontend's Python module, ``jupyterlab`` or ``notebook`` (Jupyter Notebook 7, built on the same
        JupyterLab components and loading the same prebuilt extensions).
    settings: JupyterLab settings overrides, ``{plugin_id: {key: value}}``, merged over QUIET_SETTINGS and written
        to the server's own ``app_settings_dir/overrides.json`` (they become the schema defaults the frontend sees).
    config: traitlets config merged over the defaults, e.g. ``{"ServerApp": {"log_level": "DEBUG"}}``.
    env: extra environment variables for the server and so for its kernels.
    """
    dirs = {name: base_dir / name for name in ("root", "home", "config", "data", "runtime", "app-settings",
                                               "ipython", "mini_magic_home")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)

    # A python3 kernelspec that names this interpreter explicitly, found before the venv's own (argv "python").
    write_kernel_spec(dirs["data"] / "kernels" / "python3")
    (dirs["app-settings"] / "overrides.json").write_text(json.dumps(_merge(QUIET_SETTINGS, settings or {}), indent=1))

    token = secrets.token_hex(24)
    server_config = _merge({
        "ServerApp": {"ip": "127.0.0.1", "port": 0, "port_retries": 0, "open_browser": False,
                      "allow_root": True,  # CI containers run as root; the server refuses to start otherwise
                      "root_dir": str(dirs["root"])},
        "IdentityProvider": {"token": token},
        "LabApp": {
            "app_settings_dir": str(dirs["app-settings"]),
            "news_url": None,
            "extension_manager": "readonly",  # the default "pypi" manager queries the package index
            "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
            # window.jupyterapp: lets tests read frontend state (kernel status, settings) precisely.
            "expose_app_in_browser": True,
        },
        "JupyterNotebookApp": {
            "app_settings_dir": str(dirs["app-settings"]),
            "expose_app_in_browser": True,
        },
    }, config or {})
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps(server_config, indent=1))

    server_env = {k: v for k, v in os.environ.items()
                  if not k.startswith(("JUPYTER", "IPYTHON", "MINI_MAGIC_"))}
    server_env.update({
        "HOME": str(dirs["home"]),
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTER_PREFER_ENV_PATH": "0",  # our data dir (kernelspec) before sys.prefix; sys.prefix stays on the path
        "IPYTHONDIR": str(dirs["ipython"]),
        "MINI_MAGIC_HOME": str(dirs["mini_magic_home"]),
        "PYTHONUNBUFFERED": "1",
    })
    server_env.update(env or {})

    log_path = base_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", app], cwd=dirs["root"], env=server_env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield _wait_until_up(process, dirs["runtime"], token, dirs["root"], log_path)
    finally:
        _stop(process)


def _wait_until_up(process: subprocess.Popen, runtime_dir: Path, token: str, root_dir: Path,
                   log_path: Path) -> LabServer:
    """Wait for the server's info file (it holds the port the OS picked), then for ``/api/status`` to answer."""
    info_file = runtime_dir / f"jpserver-{process.pid}.json"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    server = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if server is None and info_file.exists():
            with contextlib.suppress(ValueError):  # the file may be half written
                info = json.loads(info_file.read_text())
                server = LabServer(info["url"].rstrip("/") + "/", token, root_dir, log_path, process)
        if server is not None:
            with contextlib.suppress(OSError, urllib.error.URLError):
                server.api("api/status")
                return server
        time.sleep(0.25)
    _stop(process)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-100:])
    raise RuntimeError(f"jupyter lab did not come up (exit code {process.poll()}, "
                       f"limit {SERVER_START_TIMEOUT_S} s); server log:\n{tail}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM lets the server shut its kernels down; then kill whatever of its process tree survived."""
    try:
        family = psutil.Process(process.pid).children(recursive=True)  # kernels and their mini_magic workers
    except psutil.NoSuchProcess:
        family = []
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    _, alive = psutil.wait_procs(family, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


# ---- browser side ------------------------------------------------------------------------------------------------

@dataclass
class PageLog:
    """What a page reported: console errors (e.g. failed requests) and uncaught exceptions (``pageerror``)."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def listen(self, page) -> None:
        page.on("console", lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.page_errors.append(f"{exc.name}: {exc.message}\n{exc.stack}"))


def write_notebook(path: Path, cells: list[str]) -> None:
    """A v4.5 notebook (every cell has an id) bound to the python3 kernel, so Lab asks no 'Select Kernel'."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def notebook_cells(page):
    """The cells of the notebook in the current tab (Lab keeps other tabs' DOM, hidden)."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")


def open_notebook(page, server: LabServer, path: str, cells: list[str] | None = None,
                  timeout_ms: int = NOTEBOOK_OPEN_TIMEOUT_MS) -> None:
    """Write ``cells`` to ``root_dir/path`` (unless None: the file exists), open it, wait for an idle kernel."""
    if cells is not None:
        write_notebook(server.root_dir / path, cells)
    expected = len(cells) if cells is not None else len(nbformat.read(server.root_dir / path, 4).cells)
    page.goto(server.lab_url(path), wait_until="domcontentloaded", timeout=timeout_ms)
    notebook_cells(page).nth(expected - 1).wait_for(state="attached", timeout=timeout_ms)
    wait_for_kernel_idle(page, timeout_ms)


def wait_for_kernel_idle(page, timeout_ms: int = CELL_TIMEOUT_MS) -> None:
    """Wait until the current notebook's kernel is connected and idle (kernel_info answered)."""
    page.wait_for_function(
        """() => {
            const kernel = window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel;
            return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
        }""",
        timeout=timeout_ms,
    )


def run_cell(page, index: int, wait: bool = True, timeout_ms: int = CELL_TIMEOUT_MS) -> None:
    """Select cell ``index`` and run it with Ctrl+Enter, as a user would.

    Ctrl+Enter (run, stay) rather than Shift+Enter (run, advance) so running the last cell does not append a new
    one and shift indices. With ``wait``, return once the prompt shows a new execution count, i.e. the kernel
    replied to this execution (outputs from background threads may still arrive later).
    """
    cell = notebook_cells(page).nth(index)
    prompt = cell.locator(".jp-InputArea-prompt")
    before = prompt.inner_text()
    prompt.click()  # selects the cell in command mode without focusing the editor
    page.keyboard.press("Control+Enter")
    if wait:
        page.wait_for_function(
            "([el, before]) => /\\[\\d+\\]/.test(el.textContent) && el.textContent !== before",
            arg=[prompt.element_handle(), before], timeout=timeout_ms,
        )


def cell_output_text(page, index: int) -> str:
    """The visible text of all outputs of cell ``index``, one output per line."""
    return "\n".join(notebook_cells(page).nth(index).locator(".jp-OutputArea-output").all_inner_texts())


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/ui/ and return its path."""
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
