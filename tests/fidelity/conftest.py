"""Prints the fidelity table at the end of a pytest run, whatever the capture mode (-s or not)."""

from __future__ import annotations

from .report import NotebookReport, table

REPORTS: list[NotebookReport] = []  # filled by test_fidelity.py, one per notebook run in this session


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 (pytest's hook signature)
    # Kept on the config object too: in a whole-suite run this module's REPORTS was seen empty here (the table was
    # missing from CI's log), so the test also hands its reports to the config, which is one object per session.
    reports = getattr(config, "fidelity_reports", None) or REPORTS
    if reports:
        terminalreporter.write_sep("=", "fidelity: plain kernel vs %%thither, per notebook")
        terminalreporter.write_line(table(reports))
        terminalreporter.write_line("details: test-artifacts/fidelity/<notebook>.json")
