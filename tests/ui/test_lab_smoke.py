"""The harness itself works end to end: a %%thither cell runs from a real JupyterLab in a real browser."""

from __future__ import annotations

import pytest

from tests.ui.lab import KERNELS_SETTINGS, cell_output_text, open_notebook, run_cell


def test_thither_cell_runs_from_the_browser(lab_server, page, page_log):
    open_notebook(page, lab_server, "smoke.ipynb", [
        "%load_ext mini_magic",
        "%%thither\nimport time; time.sleep(1); x = 41 + 1",
        "x",
    ])
    for index in range(3):
        run_cell(page, index)
    assert cell_output_text(page, 2).strip() == "42"
    assert page_log.page_errors == []


@pytest.mark.parametrize(("server", "expected"), [("lab_server", "perCommTarget"),
                                                  ("lab_server_no_subshells", "disabled")])
def test_comms_over_subshells_setting(request, page, server, expected):
    """The setting reaches the server's settings API and the notebook's kernel connection (what sends comms)."""
    server = request.getfixturevalue(server)
    assert server.setting(KERNELS_SETTINGS, "commsOverSubshells") == expected

    open_notebook(page, server, "subshells.ipynb", ["1"])
    kernel = page.evaluate("""() => {
        const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
        return {supportsSubshells: kernel.supportsSubshells, commsOverSubshells: kernel.commsOverSubshells};
    }""")
    assert kernel == {"supportsSubshells": True, "commsOverSubshells": expected}
