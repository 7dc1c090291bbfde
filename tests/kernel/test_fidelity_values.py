"""Values that cross between the notebook and a ``%%thither`` cell behave as if the cell had run in the notebook:
functions live in the notebook's namespace, identity with the notebook's objects is kept, inputs changed in place
come back, and library classes stay the library's classes (issue 11, items 1, 4 and 10)."""

from __future__ import annotations

import pytest

from .test_cells import ok

pytestmark = pytest.mark.slow


def test_functions_a_cell_defines_read_the_notebook_namespace(run_notebook) -> None:
    cells = run_notebook([
        "%load_ext mini_magic",
        "%%thither\ny = 3\ndef f():\n    return y * 2\nclass C:\n    def twice(self):\n        return eval('y') * 2\n"
        "g = lambda: y + 1\ndef outer():\n    def inner():\n        return y - 1\n    return inner\nfs = {'f': f}\n"
        "inner = outer()",
        "y = 10\nprint(f(), C().twice(), g(), inner(), fs['f']())",
        # and the other way: a notebook function shipped to the worker reads the run's names, not a snapshot
        "def h():\n    return z + 1\nz = 1",
        "%%thither\nz = 41\nr = h()",
        "print(r, z)",
        # a recursive notebook function, and one calling another notebook function it alone refers to
        "def fact(n):\n    return 1 if n <= 1 else n * fact(n - 1)\ndef helper(x):\n    return x * 100\n"
        "def uses_helper(x):\n    return helper(x) + 1",
        "%%thither\nr2 = (fact(5), uses_helper(2))",
        "print(r2, fact(4), f.__module__, f.__qualname__)",
    ])
    assert ok(cells[2]).split() == ["20", "20", "11", "9", "20"]
    assert ok(cells[5]).split() == ["42", "41"]
    assert ok(cells[8]) == "(120, 201) 24 __main__ f\n"


def test_identity_with_the_notebook_objects_is_kept(run_notebook) -> None:
    cells = run_notebook([
        "%load_ext mini_magic",
        "A = [1, 2]\nalias = A",
        "%%thither\nB = A\nboth = [A, A]\nd = {'a': A}",
        "print(B is A, both[0] is A, both[1] is A, d['a'] is A)\nB.append(3)\nprint(A, alias)",
        "%%thither\nA",  # the trailing value is the notebook's object too
        "print(_ is A)",
    ])
    assert ok(cells[3]).splitlines() == ["True True True True", "[1, 2, 3] [1, 2, 3]"]
    ok(cells[4])
    assert ok(cells[5]) == "True\n"


def test_inputs_changed_in_place_come_back(run_notebook) -> None:
    cells = run_notebook([
        "%load_ext mini_magic",
        "xs = [1]\nconfig = {'lr': 0.1}\nclass Model:\n    def __init__(self):\n        self.w = 0\n"
        "    def fit(self, n):\n        self.w += n\n        return self\nm = Model()\nkeep = [0]",
        "%%thither\nxs.append(2)\nconfig.update(lr=0.2)\nm.fit(5)\nlen(keep)",
        "print(xs, config, m.w, isinstance(m, Model), keep)",
        # changed and also held by another name: both names see one object, as they would here
        "ys = [0]",
        "%%thither\nzs = ys\nzs.append(1)",
        "print(ys, zs, zs is ys)",
    ])
    ok(cells[2])
    assert ok(cells[3]) == "[1, 2] {'lr': 0.2} 5 True [0]\n"
    assert ok(cells[6]) == "[0, 1] [0, 1] True\n"


def test_library_classes_travel_by_reference(run_notebook) -> None:
    cells = run_notebook([
        "%load_ext mini_magic",
        "import numpy as np",
        "%%thither\nr = np.zeros(2, dtype=[('age', 'i4')]).view(np.recarray)",
        "print(type(r) is np.recarray, r['age'].tolist(), r.age.tolist())",
    ])
    ok(cells[2])
    assert ok(cells[3]) == "True [0, 0] [0, 0]\n"


def test_library_settings_made_in_a_thither_cell_hold_everywhere(run_notebook) -> None:
    cells = run_notebook([
        "%load_ext mini_magic",
        "%%thither\nimport numpy as np\nnp.set_printoptions(precision=2)",  # numpy is not imported in the kernel
        "a = np.array([1.23456])\nprint(a)",  # the first use imports numpy here: the setting holds
        "%%thither\nprint(a)",
        "np.set_printoptions(precision=4)",
        "%%thither\nprint(a)",  # the notebook's setting reaches the worker
        "%%thither\nnp.set_printoptions(precision=3)\nprint(a)",
        "print(a)",
    ])
    outputs = [ok(c) for c in cells[2:]]
    assert outputs == ["[1.23]\n", "[1.23]\n", "", "[1.2346]\n", "[1.235]\n", "[1.235]\n"]
