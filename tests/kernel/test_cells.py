"""End-to-end behaviour of ``%%thither`` cells in a real kernel (nbclient / jupyter_client).

Each test runs one notebook (several cells) so that kernel start-ups stay few. Values computed inside a thither cell
are checked from a following *normal* cell that prints them, so every check goes through the notebook namespace.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import CellResult

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: str) -> str:
    return _ANSI.sub("", text)


def ok(cell: CellResult) -> str:
    """Assert the cell raised nothing; return its stdout."""
    assert cell.error is None, plain("\n".join(cell.error.get("traceback", []))) if cell.error else None
    assert "UsageError" not in cell.stderr, cell.stderr
    return cell.stdout


def traceback_text(cell: CellResult) -> str:
    assert cell.error is not None, f"expected an error, got outputs {cell.outputs!r}"
    return plain("\n".join(cell.error.get("traceback", [])))


def usage_error(cell: CellResult) -> tuple[str, str]:
    """(ename, message) of an error raised before anything ran.

    IPython shows a plain ``UsageError`` as ``UsageError: ...`` on stderr (no error output); subclasses such as
    ThitherUsageError become an error output.
    """
    if cell.error is not None:
        return cell.error["ename"], plain(cell.error["evalue"] + "\n" + "\n".join(cell.error.get("traceback", [])))
    match = re.search(r"UsageError: (.*)", cell.stderr, re.S)
    assert match, f"expected a usage error, got outputs {cell.outputs!r}"
    return "UsageError", match.group(1)


def cell(source: str) -> str:
    return textwrap.dedent(source).strip("\n")


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------------------------
# 1. Closure capture
# --------------------------------------------------------------------------------------------------------------------


def test_closure_captures_values_functions_classes_modules_and_nested_uses(run_notebook):
    cells = run_notebook([
        cell("""
            import numpy as np
            import hashlib
            n = 7
            s = "text"
            def square(x):
                return x * x
            class Point:
                def __init__(self, x, y):
                    self.x, self.y = x, y
                def norm2(self):
                    return self.x ** 2 + self.y ** 2
            p = Point(3, 4)
            inc = lambda v: v + 1
            total = 10
            k = 3
            factor = 2
            items = [1, 2, 3]
            big = np.random.default_rng(0).random(50 * 1024 * 1024 // 8)
            big_digest = hashlib.sha256(big.tobytes()).hexdigest()
        """),
        cell("""
            %%thither
            r_plain = (n, s)
            r_square = square(n)
            r_norm = p.norm2()
            r_pclass = type(p).__name__
            r_lambda = inc(n)
            r_np = int(np.arange(4).sum())
            r_np_is_module = type(np).__name__ == "module" and np.__name__ == "numpy"
            def use_k():
                return k * 2
            r_def = use_k()
            r_lam2 = (lambda: factor)()
            r_comp = [i * factor for i in items]
            total += 1
            r_builtins = sorted(b for b in ("len", "print", "range", "sorted") if b in globals())
            import hashlib as _h
            remote_digest = _h.sha256(big.tobytes()).hexdigest()
            big_back = big.copy()
        """),
        cell("""
            print(r_plain, r_square, r_norm, r_pclass, r_lambda, r_np, r_np_is_module)
            print(r_def, r_lam2, r_comp, total, r_builtins)
            print(remote_digest == big_digest, big_back.dtype, big_back.shape == big.shape,
                  bool(np.array_equal(big_back, big)), big_back is not big)
        """),
        cell("""
            %%thither
            print("before")
            name_is_absent = 1
            undefined_name_xyz + 1
        """),
        "print('name_is_absent' in globals(), 'undefined_name_xyz' in globals())",
    ])
    ok(cells[0])
    ok(cells[1])
    out = lines(ok(cells[2]))
    assert out[0] == "(7, 'text') 49 25 Point 8 6 True"
    assert out[1] == "6 2 [2, 4, 6] 11 []"
    assert out[2] == "True float64 True True True"

    assert cells[3].error is not None
    assert cells[3].error["ename"] == "NameError"
    assert "undefined_name_xyz" in cells[3].error["evalue"]
    assert ok(cells[4]) == "False False\n"


# --------------------------------------------------------------------------------------------------------------------
# 2. Shared references
# --------------------------------------------------------------------------------------------------------------------


def test_shared_references_survive_the_round_trip(run_notebook):
    cells = run_notebook([
        "a = [1]\nb = {'r': a}",
        cell("""
            %%thither --out a,b,same
            a.append(2)
            same = b['r'] is a
        """),
        "print(same, b['r'] is a, a, b)",
    ])
    ok(cells[0])
    ok(cells[1])
    assert ok(cells[2]) == "True True [1, 2] {'r': [1, 2]}\n"


# --------------------------------------------------------------------------------------------------------------------
# 3. Local modules
# --------------------------------------------------------------------------------------------------------------------


def _write_local_modules(workdir: Path) -> None:
    (workdir / "helpers.py").write_text("VERSION = 1\n\ndef double(x):\n    return 2 * x\n")
    (workdir / "pkg").mkdir()
    (workdir / "pkg" / "__init__.py").write_text("from .sub import triple\n")
    (workdir / "pkg" / "sub.py").write_text("from .consts import OFFSET\n\ndef triple(x):\n    return 3 * x + OFFSET\n")
    (workdir / "pkg" / "consts.py").write_text("OFFSET = 100\n")


def test_local_modules_travel_as_source_and_are_never_stale(run_notebook, workdir):
    _write_local_modules(workdir)
    cells = run_notebook([
        # A function imported from a local module in a normal cell, then called remotely.
        "from helpers import double as dbl",
        cell("""
            %%thither
            r_imported = dbl(5)
        """),
        cell("""
            %%thither
            import os
            import helpers
            import pkg
            from pkg.sub import triple
            r_mods = (helpers.double(4), helpers.VERSION, triple(2), pkg.triple(1))
            r_file = os.path.realpath(helpers.__file__) == os.path.realpath(os.path.join(os.getcwd(), "helpers.py"))
        """),
        "print(r_imported, r_mods, r_file)",
        # Edit the module between two thither runs: a warm worker must see the new version.
        "open('helpers.py', 'w').write('VERSION = 2\\n\\ndef double(x):\\n    return 20 * x\\n')",
        cell("""
            %%thither
            import helpers
            r_new = (helpers.VERSION, helpers.double(4))
        """),
        "print(r_new)",
        # The cell's source is shipped before it runs: overwriting the file inside the cell, before the import,
        # does not change what the import sees (the worker does not read the file from disk).
        cell("""
            %%thither
            with open("helpers.py", "w") as fh:
                fh.write("VERSION = 99\\n")
            import helpers
            r_shipped = helpers.VERSION
        """),
        "print(r_shipped)",
    ])
    for c in cells:
        assert c.error is None, traceback_text(c)
    assert ok(cells[3]) == "10 (8, 1, 106, 103) True\n"
    assert ok(cells[6]) == "(2, 80)\n"
    assert ok(cells[8]) == "2\n"


# --------------------------------------------------------------------------------------------------------------------
# 4. Shell commands, refused magics, top-level await
# --------------------------------------------------------------------------------------------------------------------


def test_shell_commands_expand_notebook_variables(run_notebook):
    cells = run_notebook([
        "who = 'world'\nnum = 3",
        cell("""
            %%thither
            !echo hello {who}
            !echo dollar $who
            x = !echo listed {num * 2}; echo second
        """),
        "print(isinstance(x, list), list(x))",
    ])
    ok(cells[0])
    out = lines(ok(cells[1]))
    assert out == ["hello world", "dollar world"]
    assert ok(cells[2]) == "True ['listed 6', 'second']\n"


def test_ipython_magics_are_refused_before_anything_runs(run_notebook):
    cells = run_notebook([
        "marker = 'unchanged'",
        cell("""
            %%thither
            print("should not print")
            marker = "changed"
            %time 1 + 1
        """),
        cell("""
            %%thither
            %%timeit
            print("should not print either")
        """),
        "print(marker)",
    ])
    ok(cells[0])
    for c, magic, line in ((cells[1], "%time", "line 4"), (cells[2], "%%timeit", "line 2")):
        ename, message = usage_error(c)
        assert ename in ("UsageError", "ThitherUsageError")
        assert magic in message, message
        assert line in message, message
        assert c.stdout == ""
    assert ok(cells[3]) == "unchanged\n"


def test_top_level_await_and_async_with(run_notebook):
    cells = run_notebook([
        cell("""
            %%thither
            import asyncio
            await asyncio.sleep(0)
            class CM:
                async def __aenter__(self):
                    return "entered"
                async def __aexit__(self, *exc):
                    return False
            async def compute(v):
                await asyncio.sleep(0)
                return v * 2
            async with CM() as got:
                aw = await compute(21)
        """),
        "print(got, aw)",
    ])
    ok(cells[0])
    assert ok(cells[1]) == "entered 42\n"


# --------------------------------------------------------------------------------------------------------------------
# 5. Unpicklable values
# --------------------------------------------------------------------------------------------------------------------


def test_unpicklable_captures_fail_before_anything_runs(run_notebook):
    cases = [
        # (variable, type name, a word of the reason)
        ("fh", "TextIOWrapper", "file"),
        ("lk", "lock", "lock"),
        ("sk", "socket", "connection"),
        ("gen", "generator", "generator"),
    ]
    setup = cell("""
        import threading, socket
        fh = open("data.txt", "w")
        lk = threading.Lock()
        sk = socket.socket()
        def make_gen():
            yield 1
        gen = make_gen()
    """)
    thither = [f"%%thither\nprint('ran')\nresult_{var} = repr({var})" for var, _, _ in cases]
    check = "print(sorted(n for n in globals() if n.startswith('result_')))"
    cells = run_notebook([setup, *thither, check])
    ok(cells[0])
    for (var, type_name, reason), c in zip(cases, cells[1:5]):
        assert c.error is not None, c.outputs
        assert c.error["ename"] == "CaptureError"
        message = c.error["evalue"]
        assert f"'{var}'" in message, message
        assert type_name in message, message
        assert reason in message.lower(), message
        assert "inside the cell" in message, message  # the fix
        assert c.stdout == "", "the cell must not have run"
    assert ok(cells[5]) == "[]\n"


# --------------------------------------------------------------------------------------------------------------------
# 6. Results
# --------------------------------------------------------------------------------------------------------------------


def test_results_come_back(run_notebook):
    cells = run_notebook([
        cell("""
            class Box:
                pass
            obj = Box()
            d = {}
            xs = []
            to_delete = 1
            counter = 5
        """),
        cell("""
            %%thither
            import contextlib
            import json
            v = 1
            counter += 2
            for loop_var in range(3):
                pass
            with contextlib.nullcontext(9) as wt:
                pass
            def made_fn(q):
                return q + 100
            class Made:
                val = 7
            d["k"] = 1
            obj.x = 5
            del to_delete
            xs.append(1)
        """),
        cell("""
            print(v, counter, loop_var, wt, json.dumps([1]), made_fn(1), Made.val, Made().val)
            print(d, obj.x, 'to_delete' in globals(), xs)
        """),
        cell("""
            %%thither --out xs
            xs.append(1)
        """),
        "print(xs)",
        cell("""
            %%thither --out a1,b1
            a1 = 1
            b1 = 2
            c1 = 3
        """),
        cell("""
            %%thither --out ""
            e1 = 1
        """),
        "print(a1, b1, 'c1' in globals(), 'e1' in globals())",
    ])
    for c in cells:
        ok(c)
    out = lines(cells[2].stdout)
    assert out[0] == "1 7 2 9 [1] 101 7 7"
    # xs.append(1) changed an input in place: it comes back without --out (worker_inputs fingerprints)
    assert out[1] == "{'k': 1} 5 False [1]"
    assert cells[4].stdout == "[1, 1]\n"
    assert cells[7].stdout == "1 2 False False\n"


def test_unsendable_output_warns_trailing_expression_and_matplotlib(run_notebook):
    cells = run_notebook([
        cell("""
            %%thither
            import threading
            lk = threading.Lock()
            v = 1
        """),
        "print(v, 'lk' in globals())",
        "%%thither\n20 + 22",
        "%%thither\n20 + 22;",
        cell("""
            %%thither
            import matplotlib.pyplot as plt
            plt.plot([1, 2])
            plt.show()
        """),
    ])
    assert cells[0].error is None, traceback_text(cells[0])
    assert "'lk'" in cells[0].stderr, cells[0].outputs
    assert ok(cells[1]) == "1 False\n"

    ok(cells[2])
    results = cells[2].data("execute_result")
    assert len(results) == 1 and results[0]["text/plain"] == "42"

    ok(cells[3])
    assert cells[3].data("execute_result") == []
    assert cells[3].data() == []

    ok(cells[4])
    assert any("image/png" in d for d in cells[4].data("display_data")), cells[4].outputs


def test_files_opened_in_the_cell_are_not_brought_back_as_snapshots(run_notebook):
    """A file the cell opened (for reading, for writing, or already closed) belongs to the worker: it is named as not
    brought back, never turned into an io.StringIO copy of its content; the other names come back."""
    cells = run_notebook([
        "open('data.txt', 'w').write('line one\\nline two\\n')",
        cell("""
            %%thither
            reader = open("data.txt")
            first = reader.readline()
            writer = open("out.txt", "w")
            with open("data.txt") as closed:
                pass
            holder = {"f": reader}
        """),
        "print(repr(first), [n for n in ('reader', 'writer', 'closed', 'holder') if n in globals()])",
    ])
    ok(cells[0])
    assert cells[1].error is None, traceback_text(cells[1])
    for name in ("reader", "writer", "closed", "holder"):
        assert f"'{name}' was not brought back" in cells[1].stderr, cells[1].stderr
    assert "belongs to the process that opened it" in cells[1].stderr
    assert ok(cells[2]) == "'line one\\n' []\n"


# --------------------------------------------------------------------------------------------------------------------
# 7. Output
# --------------------------------------------------------------------------------------------------------------------


def test_output_streams_from_python_subprocesses_and_c(run_notebook):
    cells = run_notebook([
        cell("""
            %%thither
            import ctypes, logging, os, subprocess, sys
            print("p1")
            sys.stderr.write("e1\\n")
            logging.warning("w1")
            os.system("echo sub")
            subprocess.run(["echo", "proc"])
            ctypes.CDLL(None).printf(b"from C\\n")
            print("p2")
            sys.stderr.write("e2\\n")
        """),
    ])
    c = cells[0]
    ok(c)
    assert lines(c.stdout) == ["p1", "sub", "proc", "from C", "p2"], c.outputs
    assert lines(c.stderr) == ["e1", "WARNING:root:w1", "e2"], c.outputs


def test_display_update_and_clear_output_in_notebook(run_notebook):
    cells = run_notebook([
        cell("""
            %%thither
            class Fancy:
                def _repr_html_(self):
                    return "<b>fancy</b>"
            display(Fancy())
        """),
        cell("""
            %%thither
            from IPython.display import display, update_display
            display("first", display_id="d1")
            update_display("second", display_id="d1")
        """),
        cell("""
            %%thither
            from IPython.display import clear_output
            print("gone")
            clear_output()
            print("kept")
        """),
    ])
    ok(cells[0])
    html = [d for d in cells[0].data("display_data") if "text/html" in d]
    assert html and html[0]["text/html"] == "<b>fancy</b>", cells[0].outputs

    ok(cells[1])
    shown = cells[1].data("display_data")
    assert [d.get("text/plain") for d in shown] == ["'second'"], cells[1].outputs

    ok(cells[2])
    assert cells[2].stdout == "kept\n"


def test_update_display_sends_update_display_data(live_kernel):
    kernel = live_kernel()
    result = kernel.run(cell("""
        %%thither
        from IPython.display import display, update_display, clear_output
        display("first", display_id="d1")
        update_display("second", display_id="d1")
        clear_output(wait=True)
    """))
    assert result.error is None, result.error
    # The run panel (a widget) shows when the run takes over PANEL_DELAY, e.g. waiting for the cold first worker on a
    # loaded machine: it is not the cell's own output.
    kinds = [(o["output_type"], o.get("data", {}).get("text/plain"), o.get("transient", {}).get("display_id"))
             for o in result.outputs if o["output_type"] != "clear_output"
             and "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
    assert kinds == [("display_data", "'first'", "d1"), ("update_display_data", "'second'", "d1")], result.outputs
    clears = [o for o in result.outputs if o["output_type"] == "clear_output"]
    assert clears == [{"output_type": "clear_output", "wait": True}]


# --------------------------------------------------------------------------------------------------------------------
# 8. Errors
# --------------------------------------------------------------------------------------------------------------------


def test_errors_come_back_with_type_message_and_notebook_lines(run_notebook):
    cells = run_notebook([
        cell("""
            def failing(v):
                w = v + 1
                raise KeyError(f"inner {w}")
        """),
        cell("""
            %%thither
            before_raise = 1
            raise ValueError('bad')
        """),
        cell("""
            %%thither
            class MyErr(Exception):
                pass
            custom_assigned = 1
            raise MyErr("custom")
        """),
        cell("""
            %%thither
            failing(1)
        """),
        "print('before_raise' in globals(), 'custom_assigned' in globals(), 'MyErr' in globals())",
    ])
    ok(cells[0])

    err = cells[1].error
    assert err is not None and err["ename"] == "ValueError" and err["evalue"] == "bad"
    tb = traceback_text(cells[1])
    assert "line 3" in tb, tb
    assert "raise ValueError('bad')" in tb, tb

    err = cells[2].error
    assert err is not None and err["ename"] == "MyErr" and err["evalue"] == "custom", err

    err = cells[3].error
    assert err is not None and err["ename"] == "KeyError", err
    tb = traceback_text(cells[3])
    assert 'raise KeyError(f"inner {w}")' in tb, tb

    assert ok(cells[4]) == "False False False\n"


# --------------------------------------------------------------------------------------------------------------------
# 9. Options and configuration
# --------------------------------------------------------------------------------------------------------------------


def test_options_help_env_backend_gpu_and_timeout(run_notebook):
    cells = run_notebook([
        "print(get_ipython().find_cell_magic('thither').__doc__)",
        cell("""
            %%thither --env FOO=bar
            import os
            foo1 = os.environ.get("FOO")
        """),
        cell("""
            %%thither
            import os
            foo2 = os.environ.get("FOO")
        """),
        "print(foo1, foo2)",
        "%%thither --env FOO\nprint('ran')",
        "%%thither --backend nope\nprint('ran')",
        "%%thither --gpu L4\nprint('ran on cpu')",
        "%config Thither.timeout = 1",
        "%%thither\nimport time\ntime.sleep(5)\nslept = True",
        "print('slept' in globals())",
    ])
    doc = ok(cells[0])
    for flag in ("--backend", "--gpu", "--timeout", "--out", "--env"):
        assert flag in doc, doc
    match = re.search(r"--timeout SECONDS\s+(.*?)\n\s*--out", doc, re.S)
    assert match, doc
    timeout_help = match.group(1)
    assert "default" in timeout_help.lower() and ("86400" in timeout_help or "24 h" in timeout_help), doc

    ok(cells[1])
    ok(cells[2])
    assert ok(cells[3]) == "bar None\n"

    ename, message = usage_error(cells[4])
    assert ename in ("UsageError", "ThitherUsageError")
    assert "--env" in message and "KEY=VALUE" in message and "FOO" in message, message
    assert cells[4].stdout == ""

    ename, message = usage_error(cells[5])
    assert ename in ("UsageError", "ThitherUsageError")
    assert "nope" in message and "local" in message, message
    assert cells[5].stdout == ""

    assert ok(cells[6]) == "ran on cpu\n"
    if shutil.which("nvidia-smi") is None:
        assert "no GPU is visible" in cells[6].stderr, cells[6].outputs

    ok(cells[7])
    assert cells[8].error is not None and cells[8].error["ename"] == "RunTimeout", cells[8].outputs
    assert ok(cells[9]) == "False\n"


def test_backend_precedence_flag_over_config_over_environment(run_notebook):
    cells = run_notebook([
        "%%thither\nprint('env backend')",
        "%%thither --backend local\nprint('flag over env')",
        '%config Thither.backend = "local"',
        "%%thither\nprint('config over env')",
        '%config Thither.backend = "nope2"',
        "%%thither\nprint('bad config')",
        "%%thither --backend local\nprint('flag over config')",
    ], env={"MINI_MAGIC_BACKEND": "nope"})
    ename, message = usage_error(cells[0])
    assert "'nope'" in message and "local" in message, message
    assert cells[0].stdout == ""
    assert ok(cells[1]) == "flag over env\n"
    ok(cells[2])
    assert ok(cells[3]) == "config over env\n"
    ok(cells[4])
    ename, message = usage_error(cells[5])
    assert "'nope2'" in message, message
    assert ok(cells[6]) == "flag over config\n"


# --------------------------------------------------------------------------------------------------------------------
# 10. Clean runs
# --------------------------------------------------------------------------------------------------------------------


def test_process_state_and_namespace_do_not_leak_between_runs(run_notebook):
    cells = run_notebook([
        "import os, sys\nstart_cwd = os.getcwd()",
        cell("""
            %%thither --out ""
            import os, sys
            os.chdir("/tmp")
            os.environ["LEAK_VAR"] = "1"
            sys.path.insert(0, "/leak/path")
            hidden = 42
        """),
        cell("""
            %%thither
            import os, sys
            cwd2 = os.getcwd()
            leak_env = os.environ.get("LEAK_VAR")
            leak_path = "/leak/path" in sys.path
            hidden_seen = "hidden" in globals()
        """),
        cell("""
            print(cwd2 == start_cwd, leak_env, leak_path, hidden_seen)
            print(os.getcwd() == start_cwd, 'LEAK_VAR' in os.environ, '/leak/path' in sys.path, 'hidden' in globals())
        """),
    ])
    for c in cells:
        ok(c)
    assert lines(cells[3].stdout) == ["True None False False", "True False False False"]


# --------------------------------------------------------------------------------------------------------------------
# 11. Unload
# --------------------------------------------------------------------------------------------------------------------


def test_timeout_must_be_a_finite_number(run_notebook):
    # float() parses 'nan' and 'inf'; such a timeout used to be accepted, and the run's record could then not be sent
    # to the frontend (strict JSON).
    cells = run_notebook([
        "%%thither --timeout nan\nran = 1",
        "%%thither --timeout inf\nran = 1",
        "%config Thither.timeout = float('inf')",
        "%%thither\nran = 1",
        "%config Thither.timeout = 0\nprint('ran' in globals())",
        "%thither runs",
    ])
    for refused, source in ((cells[0], "--timeout nan"), (cells[1], "--timeout inf"),
                            (cells[3], "%config Thither.timeout inf")):
        ename, message = usage_error(refused)
        assert ename in ("UsageError", "ThitherUsageError")
        assert source in message and "finite" in message and "--timeout 3600" in message, message
    assert ok(cells[4]) == "False\n"
    assert ok(cells[5]) == "no runs recorded yet\n"  # refused before anything was recorded


def test_a_flag_of_another_backend_is_refused_naming_that_backend(run_notebook):
    # --pip, --cpu and --image are the modal backend's: on the local backend they used to be accepted and ignored.
    cells = run_notebook([
        "x = 1\nbefore = {k for k in globals() if not k.startswith('_')}",
        "%%thither --backend local --pip torch --cpu 8 --image img\nx = 2\ny = 3\nprint('ran')",
        "print(x, {k for k in globals() if not k.startswith('_')} - before - {'before'})",
        "%thither runs",
    ])
    ename, message = usage_error(cells[1])
    assert ename in ("UsageError", "ThitherUsageError")
    assert "--pip" in message and "'modal'" in message and "'local'" in message, message
    assert cells[1].stdout == ""
    assert ok(cells[2]) == "1 set()\n"  # the namespace is unchanged
    assert ok(cells[3]) == "no runs recorded yet\n"  # refused before anything was recorded


def test_unload_and_reload_extension(run_notebook):
    cells = run_notebook([
        "%unload_ext mini_magic",
        "%%thither\nprint('should not run')",
        "%load_ext mini_magic",
        "%%thither\nprint('again')",
    ])
    ok(cells[0])
    ename, message = usage_error(cells[1])
    assert "thither" in message and "not found" in message, message
    assert cells[1].stdout == ""
    ok(cells[2])
    assert ok(cells[3]) == "again\n"
