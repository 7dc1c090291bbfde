"""A ``%%thither`` cell's shell lines and imports behave as the same cell run normally in the kernel (issue 11, 6-7).

Shell lines: each check runs the same line in a normal cell and in a thither cell of one notebook and compares what
the two print (stream by stream, as the notebook stores it). Imports: a module the thither cell binds comes back
without its import running in the kernel, and is imported on first use.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import CellResult

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def ok(cell: CellResult) -> CellResult:
    assert cell.error is None, _ANSI.sub("", "\n".join(cell.error.get("traceback", []))) if cell.error else None
    return cell


def streams(cell: CellResult) -> tuple[str, str]:
    """(stdout, stderr) as the notebook shows them."""
    ok(cell)
    return cell.stdout, cell.stderr


def thither(source: str) -> str:
    return "%%thither\n" + source


BASH_AND_ERRORS = "!ls /nonexistent; if [[ 1 == 1 ]]; then echo ok; fi"
INTERLEAVED = "!echo out1; echo err1 >&2; echo out2; echo err2 >&2"
EXIT_CODES = "!exit 3\ncodes = [_exit_code]\n!kill -TERM $$\ncodes.append(_exit_code)\n!sh -c 'exit 130'\ncodes.append(_exit_code)"
TERMINAL = "!test -t 0 && test -t 1 && test -t 2 && echo terminal; stty size; echo $0"
CAPTURED = "x = !ls /nonexistent; test -t 1 || echo piped; exit 4"


def test_shell_lines_run_like_the_kernels(run_notebook):
    """Same shell (bash syntax works under SHELL=bash), stderr merged into stdout in write order, same exit codes, a
    terminal for `!`, pipes and merged stderr for `x = !`: what the normal cell prints, the thither cell prints."""
    cells = run_notebook([
        BASH_AND_ERRORS,
        thither(BASH_AND_ERRORS),
        INTERLEAVED,
        thither(INTERLEAVED),
        EXIT_CODES + "\nprint(codes)",
        thither(EXIT_CODES),
        "print(codes)",
        TERMINAL,
        thither(TERMINAL),
        "_exit_code = 'before'\n" + CAPTURED + "\nprint(type(x).__module__, type(x).__name__, list(x), _exit_code)",
        "_exit_code = 'before'",
        thither(CAPTURED),
        "print(type(x).__module__, type(x).__name__, list(x), _exit_code)",
    ], timeout=120, env={"SHELL": shutil.which("bash")})
    normal, remote = streams(cells[0]), streams(cells[1])
    assert normal[0].endswith("ok\r\n") and normal[1] == "", normal  # what a normal cell gives, for the record
    assert remote == normal
    normal, remote = streams(cells[2]), streams(cells[3])
    assert normal == ("out1\r\nerr1\r\nout2\r\nerr2\r\n", "")
    assert remote == normal
    assert streams(cells[4])[0] == "[3, -15, -2]\n"
    assert streams(cells[6])[0] == streams(cells[4])[0]
    normal, remote = streams(cells[7]), streams(cells[8])
    assert normal[0].startswith("terminal\r\n24 80\r\n"), normal
    assert remote == normal
    normal = streams(cells[9])[0]
    assert normal == ("IPython.utils.text SList [\"ls: cannot access '/nonexistent': No such file or directory\", "
                      "'piped'] before\n")
    ok(cells[10])
    ok(cells[11])
    assert streams(cells[12])[0] == normal


def test_without_shell_both_use_sh(run_notebook, monkeypatch):
    """A kernel with no $SHELL (many containers, CI jobs) runs `!` lines in `sh`: so does the thither cell."""
    monkeypatch.delenv("SHELL", raising=False)
    line = "!echo $$0; " + BASH_AND_ERRORS[1:]
    cells = run_notebook([line, thither(line)])
    normal, remote = streams(cells[0]), streams(cells[1])
    assert normal[0].startswith(f"{shutil.which('sh')}\r\n"), normal
    assert remote == normal


def test_a_command_ending_in_ampersand_is_refused_as_in_the_kernel(run_notebook):
    cells = run_notebook(["!sleep 1 &", thither("!sleep 1 &")])
    for cell in cells:
        assert cell.error is not None and cell.error["ename"] == "OSError", cell.outputs
        assert cell.error["evalue"] == "Background processes not supported."


def test_an_import_runs_once_and_only_in_the_worker(run_notebook):
    cells = run_notebook([
        thither("import this"),
        "import sys\nprint('this' in sys.modules, type(this).__name__)",
    ])
    everything = "".join(o.get("text", "") for c in cells for o in c.outputs)
    assert everything.count("Beautiful is better than ugly.") == 1, everything
    assert streams(cells[1])[0] == "False ReturnedModule\n"


def test_a_returned_module_is_imported_here_on_first_use(run_notebook):
    cells = run_notebook([
        "import sys\nprint('graphlib' in sys.modules, 'tabnanny' in sys.modules)",
        thither("import graphlib, tabnanny\nimport os"),
        "print('graphlib' in sys.modules, 'tabnanny' in sys.modules, os is sys.modules['os'])\ngraphlib",
        "print(tuple(graphlib.TopologicalSorter({'b': {'a'}}).static_order()))",
        "print('graphlib' in sys.modules, graphlib is sys.modules['graphlib'], 'tabnanny' in sys.modules)",
        "import tabnanny\nprint(tabnanny is sys.modules['tabnanny'])",
    ])
    assert streams(cells[0])[0] == "False False\n", "the kernel imported them already: pick other modules"
    ok(cells[1])
    assert streams(cells[2])[0] == "False False True\n"
    assert "imported here on first use" in cells[2].data("execute_result")[0]["text/plain"]
    assert streams(cells[3])[0] == "('a', 'b')\n"
    assert streams(cells[4])[0] == "True True False\n"
    assert streams(cells[5])[0] == "True\n"


def test_a_module_that_is_not_installed_here_fails_clearly_on_use(run_notebook, workdir: Path):
    remote_only = workdir / "remote_only"
    remote_only.mkdir()
    (remote_only / "remote_only_mod.py").write_text("VALUE = 42\n")
    cells = run_notebook([
        thither(f"import sys\nsys.path.insert(0, {str(remote_only)!r})\nimport remote_only_mod\nseen = "
                "remote_only_mod.VALUE"),
        "print(seen, 'remote_only_mod' in sys.modules)",
        "remote_only_mod.VALUE",
    ])
    ok(cells[0])
    assert streams(cells[1])[0] == "42 False\n"
    error = cells[2].error
    assert error is not None and error["ename"] == "ModuleNotFoundError", cells[2].outputs
    assert "'remote_only_mod'" in error["evalue"] and "%%thither" in error["evalue"], error["evalue"]
    assert "not installed here" in error["evalue"], error["evalue"]
