"""Names a ``%%thither`` cell uses or unbinds behave as if the cell had run in the notebook (issue 11, items 3 and 5):
names read only inside evaluated strings travel, ``--in`` sends what no analysis can see (and a NameError for such a
name says so), and ``except ... as e`` / ``del x`` leave the notebook without the name exactly when a normal cell
would."""

from __future__ import annotations

import pytest

from .test_cells import ok, traceback_text, usage_error

pytestmark = pytest.mark.slow


def test_names_inside_strings_and_in_option(run_notebook) -> None:
    cells = run_notebook([
        "limit = 3\nexpr_text = 'limit * 10'",
        "%%thither\nr = eval('limit + 1')\ndef twice():\n    return eval('limit * 2')\nr_def = twice()",
        "print(r, r_def)",
        # a string built at run time: no analysis can see `limit` in it, --in sends it
        "%%thither --in limit\nr2 = eval(expr_text)",
        "print(r2)",
        # without --in: the NameError says the name exists here and how to send it
        "%%thither\nr3 = eval(expr_text)",
        "print('r3' in globals())",
        # an --in name the notebook does not define: refused before anything runs
        "%%thither --in limit,nope\nr4 = 1",
        "print('r4' in globals())",
        # a name the notebook does not define either: a plain NameError, no hint
        "%%thither\nr5 = eval('undefined_here')",
        # a background run's error carries the hint too
        "%%thither --bg --name job\nr6 = eval(expr_text)",
        "job.wait(60)\njob.result()",
    ])
    assert ok(cells[2]) == "4 6\n"
    assert ok(cells[4]) == "30\n"
    hidden = traceback_text(cells[5])
    assert cells[5].error["ename"] == "NameError"
    assert "name 'limit' is not defined" in hidden
    assert "'limit' exists in the notebook" in hidden and "%%thither --in limit" in hidden
    assert ok(cells[6]) == "False\n"
    ename, message = usage_error(cells[7])
    assert "--in" in message and "'nope'" in message and "'limit'" not in message and "Nothing ran" in message
    assert ok(cells[8]) == "False\n"
    undefined = traceback_text(cells[9])
    assert "name 'undefined_here' is not defined" in undefined and "--in" not in undefined
    background = traceback_text(cells[11])
    assert cells[11].error["ename"] == "NameError" and "%%thither --in limit" in background


# (cell body, a normal cell that prints what the notebook holds afterwards); before each, e, x, y = 'old' and show()
# returns e.
UNBINDING_CELLS = [
    ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    pass", "print('e' in globals())"),
    ("try:\n    pass\nexcept ZeroDivisionError as e:\n    pass", "print(e)"),
    ("x = 1\ndel x", "print('x' in globals())"),
    ("if len(y) > 10:\n    y = 1\n    del y", "print(y)"),  # the branch does not run: y keeps its value
    # a notebook function the cell calls reads the name the handler unbinds: it sees the notebook's value
    ("r = show()\ntry:\n    1 / 0\nexcept ZeroDivisionError as e:\n    pass", "print(r, 'e' in globals())"),
    ("for i in range(2):\n    try:\n        [][i]\n    except IndexError as e:\n        x = i\n"
     "    else:\n        y = i", "print('e' in globals(), x, y, i)"),
]


def test_unbound_names_match_a_normal_cell(run_notebook) -> None:
    setup = "e = x = y = 'old'\ndef show():\n    return e"
    sources = []
    for body, check in UNBINDING_CELLS:
        sources += [setup, body, check, setup, "%%thither\n" + body, check]
    sources.append("print([k for k, v in globals().items() if type(v).__name__ == 'NotSent'])")
    cells = run_notebook(sources)
    for index, (body, _) in enumerate(UNBINDING_CELLS):
        normal, remote = cells[6 * index: 6 * index + 3], cells[6 * index + 3: 6 * index + 6]
        for result in (*normal, *remote):
            ok(result)
        assert remote[2].stdout == normal[2].stdout, body
    assert [cells[6 * i + 2].stdout for i in range(len(UNBINDING_CELLS))] == [
        "False\n", "old\n", "False\n", "old\n", "old False\n", "False 1 old 1\n"]
    assert ok(cells[-1]) == "[]\n"
