"""Fixtures for real-browser tests: a real ``jupyter lab`` server and a headless Debian Chromium driven by Playwright.

Every test in tests/ui is marked ``slow`` and ``ui`` (deselect with ``-m "not ui"``). A missing Playwright or
Chromium fails the tests with what to install (.ci/test installs both): a skip would hide that nothing was tested. Playwright must never download its own browsers here: we drive the
system Chromium through ``executable_path``.

On a failing test the page's screenshot, its console log and the server log land in test-artifacts/ui/, and the
server log tail is added to the failure report.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.ui.lab import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, NO_SUBSHELLS, LabServer, PageLog, start_lab_server

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    """Mark this directory's tests (the hook sees the whole session's items, so filter by path)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.ui)


class LabServers:
    """Starts servers with extra settings/config on demand; all are stopped at the end of the session."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, stack: contextlib.ExitStack) -> None:
        self._tmp = tmp_path_factory
        self._stack = stack
        self.servers: list[LabServer] = []

    def __call__(self, settings: dict | None = None, config: dict | None = None,
                 env: dict[str, str] | None = None, app: str = "jupyterlab") -> LabServer:
        """settings: ``{plugin_id: {key: value}}`` overrides (e.g. lab.NO_SUBSHELLS); config: traitlets config;
        app: ``jupyterlab`` or ``notebook`` (Jupyter Notebook 7)."""
        server = self._stack.enter_context(start_lab_server(self._tmp.mktemp("lab"), settings, config, env, app))
        self.servers.append(server)
        return server


@pytest.fixture(scope="session")
def lab_server_factory(tmp_path_factory):
    with contextlib.ExitStack() as stack:
        yield LabServers(tmp_path_factory, stack)


@pytest.fixture(scope="session")
def lab_server(lab_server_factory) -> LabServer:
    """One default server shared by the session (Lab's defaults, except no news/update checks)."""
    return lab_server_factory()


@pytest.fixture(scope="session")
def lab_server_no_subshells(lab_server_factory) -> LabServer:
    """A server whose Lab sends comm messages on the main shell channel (commsOverSubshells "disabled"), as
    JupyterLab < 4.4 does: comm handlers then run only between cells, never while one executes."""
    return lab_server_factory(settings=NO_SUBSHELLS)


@pytest.fixture(scope="session")
def notebook7_server(lab_server_factory) -> LabServer:
    """A Jupyter Notebook 7 server (``jupyter notebook``): the same prebuilt extensions, another shell."""
    return lab_server_factory(app="notebook")


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install -e '.[test]' (bash .ci/test does)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (bash .ci/test does), "
                    "or set MINI_MAGIC_CHROMIUM")
    with sync_api.sync_playwright() as playwright:
        # launch() gives every browser process a fresh temporary profile (--user-data-dir) and removes it on close.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page_log() -> PageLog:
    """Console errors and uncaught page errors of the test's ``page`` (filled as the page runs)."""
    return PageLog()


@pytest.fixture
def page(browser, page_log):
    """A page in a new browser context (own cookies and storage), so tests do not share a Lab session."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page_log.listen(page)
    yield page
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure: screenshot + console log + server log into test-artifacts/ui/<test>/, log tail into the report."""
    report = (yield).get_result()
    if not report.failed or call.when == "teardown" or HERE not in item.path.parents:
        return
    out = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name)
    out.mkdir(parents=True, exist_ok=True)
    page, log = item.funcargs.get("page"), item.funcargs.get("page_log")
    if page is not None:
        with contextlib.suppress(Exception):  # a crashed page must not hide the real failure
            page.screenshot(path=str(out / "failure.png"), full_page=True)
    if log is not None:
        (out / "console.txt").write_text("\n".join(["console errors:", *log.console_errors,
                                                    "", "page errors:", *log.page_errors]))
    servers = [v for v in item.funcargs.values() if isinstance(v, LabServer)]
    factory = item.funcargs.get("lab_server_factory")
    servers += [s for s in (factory.servers if factory else []) if s not in servers]
    for n, server in enumerate(servers):
        shutil.copy(server.log_path, out / f"server-{n}.log")
        report.sections.append((f"jupyter lab server {n} log (tail)", server.log_tail(80)))
