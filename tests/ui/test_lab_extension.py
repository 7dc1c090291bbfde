"""The lab extension in a real JupyterLab and a real Chromium: status bar, runs panel, Cancel (over a subshell, and
the interrupt fallback without subshells), cell badges, reload, restart, and scrolling to a run's cell."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.ui.lab import cell_output_text, notebook_cells, open_notebook, run_cell, screenshot, wait_for_kernel_idle

PANEL_TAB = '.lm-TabBar-tab[data-id="mini-magic-runs"]'


def status_item(page):
    return page.locator(".mm-StatusItem")


def panel(page):
    return page.locator("#mini-magic-runs")


def run_row(page, text: str):
    return panel(page).locator(".mm-Run", has_text=text)


def open_panel_from_sidebar(page) -> None:
    if not panel(page).is_visible():
        page.locator(PANEL_TAB).click()
    expect(panel(page)).to_be_visible()


def our_console_errors(page_log) -> list[str]:
    """Errors about us or any comm (JupyterLab logs e.g. "Comm not found" for a comm_close it cannot place)."""
    ours = [e for e in page_log.console_errors if "mini" in e.lower() or "comm" in e.lower()]
    return ours + page_log.page_errors


def test_status_bar_and_panel_follow_a_run(lab_server, page, page_log):
    open_notebook(page, lab_server, "status.ipynb", [
        "%load_ext mini_magic",
        "%%thither\nimport time\ntime.sleep(8)\ny = 1",
        "y",
    ])
    open_panel_from_sidebar(page)
    # The kernel has not loaded mini_magic: the panel says so, the status bar shows nothing, nothing breaks.
    expect(panel(page).locator(".mm-RunsPanel-header")).to_contain_text("mini_magic is not loaded")
    expect(status_item(page)).to_be_hidden()

    run_cell(page, 0)  # %load_ext: the kernel opens the comm itself, the panel connects
    expect(panel(page).locator(".mm-RunsPanel-header")).to_contain_text("0 active")

    run_cell(page, 1, wait=False)
    expect(status_item(page)).to_have_text(re.compile(r"⚡ 1 running · local · 00:0\d"))
    expect(status_item(page)).to_have_text(re.compile(r"00:0[2-9]"), timeout=10_000)  # ticks with no kernel traffic
    cell = notebook_cells(page).nth(1)
    expect(cell).to_have_attribute("data-mini-magic", "⚡ running · local")
    expect(run_row(page, "import time")).to_have_attribute("data-state", "running")
    cancel_button = run_row(page, "import time").locator(".mm-Run-cancel")
    expect(cancel_button).to_be_visible()
    # The panel re-renders every second; a Cancel button replaced under the pointer would swallow clicks.
    button = cancel_button.element_handle()
    page.wait_for_timeout(1500)
    assert button.evaluate("el => el.isConnected"), "the Cancel button was rebuilt by a tick"
    screenshot(page, "extension-running")

    expect(status_item(page)).to_be_hidden(timeout=30_000)
    expect(run_row(page, "import time")).to_have_attribute("data-state", "done")
    expect(run_row(page, "import time").locator(".mm-Run-cancel")).to_be_hidden()
    expect(cell).not_to_have_attribute("data-mini-magic", re.compile(".*"))
    run_cell(page, 2)
    assert cell_output_text(page, 2).strip() == "1"
    screenshot(page, "extension-done")
    assert our_console_errors(page_log) == []


def test_a_failed_run_stays_in_the_status_bar_until_seen(lab_server, page, page_log):
    open_notebook(page, lab_server, "failed.ipynb", ["%load_ext mini_magic", "%%thither\nraise ValueError('bad')"])
    run_cell(page, 0)
    run_cell(page, 1)
    expect(status_item(page)).to_have_text("⚠ 1 failed")
    status_item(page).click()
    expect(run_row(page, "raise ValueError")).to_have_attribute("data-state", "failed")
    expect(run_row(page, "raise ValueError").locator(".mm-Run-error")).to_contain_text("ValueError: bad")
    expect(status_item(page)).to_be_hidden()
    assert our_console_errors(page_log) == []


def _start_sleeping_cell(page, server, name: str) -> None:
    open_notebook(page, server, name, [
        "%load_ext mini_magic",
        "%%thither\nimport time\nprint('started', flush=True)\ntime.sleep(120)",
    ])
    run_cell(page, 0)
    run_cell(page, 1, wait=False)
    expect(notebook_cells(page).nth(1).locator(".jp-Cell-outputArea")).to_contain_text("started", timeout=30_000)


def test_cancel_from_the_runs_panel_goes_over_a_subshell(lab_server, page, page_log):
    _start_sleeping_cell(page, lab_server, "cancel.ipynb")
    status_item(page).click()
    row = run_row(page, "import time")
    row.locator(".mm-Run-cancel").click()
    expect(panel(page).locator(".mm-RunsPanel-note")).to_have_text("cancel requested")
    expect(row).to_have_attribute("data-state", "cancelled", timeout=15_000)
    expect(notebook_cells(page).nth(1).locator(".jp-Cell-outputArea")).to_contain_text("RunCancelled")
    assert "KeyboardInterrupt" not in cell_output_text(page, 1)  # the comm did it; the kernel was not interrupted
    screenshot(page, "extension-cancelled")
    assert our_console_errors(page_log) == []


def test_without_subshells_cancel_interrupts_the_foreground_cell(lab_server_no_subshells, page, page_log):
    _start_sleeping_cell(page, lab_server_no_subshells, "interrupt.ipynb")
    status_item(page).click()
    row = run_row(page, "import time")
    row.locator(".mm-Run-cancel").click()
    expect(row.locator(".mm-Run-state")).to_have_text("cancelling…")
    expect(panel(page).locator(".mm-RunsPanel-note")).to_contain_text("interrupted the kernel", timeout=15_000)
    expect(row).to_have_attribute("data-state", "cancelled", timeout=15_000)
    expect(notebook_cells(page).nth(1).locator(".jp-Cell-outputArea")).to_contain_text("KeyboardInterrupt")
    assert our_console_errors(page_log) == []


def test_without_subshells_a_background_run_is_never_interrupted(lab_server_no_subshells, page, page_log):
    open_notebook(page, lab_server_no_subshells, "background.ipynb", [
        "%load_ext mini_magic",
        "%%thither --bg --name job\nimport time\ntime.sleep(120)",
        "import time\ntime.sleep(15)\nprint('foreground finished')",
    ])
    run_cell(page, 0)
    run_cell(page, 1)
    run_cell(page, 2, wait=False)
    expect(notebook_cells(page).nth(2).locator(".jp-InputArea-prompt")).to_contain_text("[*]")
    open_panel_from_sidebar(page)
    row = run_row(page, "import time")
    expect(row).to_contain_text("background")
    row.locator(".mm-Run-cancel").click()
    # No answer while the foreground cell runs, and no interrupt: that would kill the user's other cell.
    expect(panel(page).locator(".mm-RunsPanel-note")).to_contain_text("once its current cell ends", timeout=15_000)
    expect(notebook_cells(page).nth(2).locator(".jp-Cell-outputArea")).to_contain_text("foreground finished",
                                                                                         timeout=30_000)
    assert "KeyboardInterrupt" not in cell_output_text(page, 2)
    # The kernel reads the Cancel once the cell has ended.
    expect(row).to_have_attribute("data-state", "cancelled", timeout=15_000)
    assert our_console_errors(page_log) == []


def test_runs_survive_a_reload_lead_to_their_cell_and_clear_on_restart(lab_server, page, page_log):
    fillers = [f"# filler cell {i}\n" + "\n".join(f"a{j} = {j}" for j in range(6)) for i in range(25)]
    open_notebook(page, lab_server, "long.ipynb", ["%load_ext mini_magic", *fillers, "%%thither\nz = 3"])
    last = len(fillers) + 1
    run_cell(page, 0)
    run_cell(page, last)

    page.reload()
    wait_for_kernel_idle(page)
    open_panel_from_sidebar(page)
    row = run_row(page, "z = 3")
    expect(row).to_have_attribute("data-state", "done")  # restored from the kernel's run registry

    page.evaluate("() => { const nb = window.jupyterapp.shell.currentWidget.content;"
                  " nb.activeCellIndex = 0; return nb.scrollToItem(0, 'start'); }")
    target = notebook_cells(page).nth(last)
    expect(target).not_to_be_in_viewport()
    row.click()
    expect(target).to_be_in_viewport()
    expect(target).to_have_class(re.compile(r"\bjp-mod-active\b"))

    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
    expect(panel(page).locator(".mm-RunsPanel-header")).to_contain_text("mini_magic is not loaded")
    expect(panel(page).locator(".mm-Run")).to_have_count(0)
    wait_for_kernel_idle(page)
    run_cell(page, 0)  # the new process loads mini_magic: the panel connects again
    run_cell(page, last)
    expect(run_row(page, "z = 3")).to_have_attribute("data-state", "done")
    expect(panel(page).locator(".mm-Run")).to_have_count(1)
    assert our_console_errors(page_log) == []


def test_a_reload_mid_cell_catches_up_when_the_cell_ends(lab_server, page, page_log):
    """After a reload while a cell runs, JupyterLab handles this page's kernel messages only once the kernel has
    answered kernel_info, which a kernel busy with a cell does after it: the panel connects then, and shows how the
    run ended (the kernel's Stop button works meanwhile)."""
    open_notebook(page, lab_server, "reload.ipynb", [
        "%load_ext mini_magic",
        "%%thither\nimport time\nprint('started', flush=True)\ntime.sleep(8)\nw = 1",
    ])
    run_cell(page, 0)
    run_cell(page, 1, wait=False)
    expect(notebook_cells(page).nth(1).locator(".jp-Cell-outputArea")).to_contain_text("started", timeout=30_000)
    page.reload()
    open_panel_from_sidebar(page)
    expect(run_row(page, "import time")).to_have_attribute("data-state", "done", timeout=30_000)
    expect(panel(page).locator(".mm-RunsPanel-header")).to_contain_text("0 active")
    assert our_console_errors(page_log) == []
