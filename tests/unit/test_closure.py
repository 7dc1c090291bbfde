"""Tests for mini_magic.closure: what a cell reads from, and binds in, the notebook namespace."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from mini_magic.closure import CellAnalysis, MagicUse, StarImportError, analyze_cell
from mini_magic.closure_strings import names_in_expression

# (id, transformed cell source, expected reads, expected writes); both tuples are compared in order.
NAME_CASES: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    ("simple", "y = x * 2\n", ("x",), ("y",)),
    ("self-increment", "x = x + 1\n", ("x",), ("x",)),
    ("assigned-then-read", "x = 1\ny = x + 1\n", (), ("x", "y")),
    ("read-then-assigned", "print(x)\nx = 1\n", ("print", "x"), ("x",)),
    ("if-without-else", "if c:\n    x = 1\nprint(x)\n", ("c", "print", "x"), ("x",)),
    ("if-else-both-assign", "if c:\n    x = 1\nelse:\n    x = 2\nprint(x)\n", ("c", "print"), ("x",)),
    ("elif-without-else", "if a:\n    x = 1\nelif b:\n    x = 2\nx\n", ("a", "b", "x"), ("x",)),
    ("if-else-one-deletes", "x = 1\nif c:\n    del x\nelse:\n    pass\nx\n", ("c", "x"), ("x",)),
    ("for-augmented-accumulate", "for i in r:\n    total += i\n", ("r", "total"), ("i", "total")),
    ("for-accumulate-initialised", "total = 0\nfor i in r:\n    total += i\n", ("r",), ("total", "i")),
    ("for-read-assigned-later-in-body", "for i in r:\n    total = total + i\n", ("r", "total"), ("i", "total")),
    (
        "for-body-binding-not-sure",
        "for i in r:\n    last = i\nprint(last, i)\n",
        ("r", "print", "last", "i"),
        ("i", "last"),
    ),
    (
        "for-else-does-not-see-body-names",
        "for i in r:\n    last = i\nelse:\n    print(last)\n",
        ("r", "print", "last"),
        ("i", "last"),
    ),
    ("for-else-not-sure", "for i in r:\n    break\nelse:\n    found = 0\nfound\n", ("r", "found"), ("i", "found")),
    ("while", "while n > 0:\n    n -= 1\n    seen = n\nprint(seen)\n", ("n", "print", "seen"), ("n", "seen")),
    ("while-walrus-test-is-sure", "while (chunk := read()):\n    pass\nprint(chunk)\n", ("read", "print"), ("chunk",)),
    ("builtins-are-reads", "print(len(x))\n", ("print", "len", "x"), ()),
    ("get_ipython-never-read", "ip = get_ipython()\n__builtins__.len(x)\n", ("x",), ("ip",)),
    ("listcomp", "ys = [x * k for x in xs if x > lo]\n", ("xs", "lo", "k"), ("ys",)),
    ("comprehension-var-does-not-leak", "ys = [x for x in xs]\nprint(x)\n", ("xs", "print", "x"), ("ys",)),
    (
        "set-dict-generator",
        "s = {a for a in xs}\nd = {k: v * f for k, v in items}\ng = sum(y for y in ys)\n",
        ("xs", "items", "f", "sum", "ys"),
        ("s", "d", "g"),
    ),
    ("nested-comprehension", "m = [[i * j for j in cols] for i in rows]\n", ("rows", "cols"), ("m",)),
    ("nested-comprehension-outer-var", "m = [[i + j for j in range(i)] for i in rows]\n", ("rows", "range"), ("m",)),
    ("comprehension-sees-earlier-binding", "k = 2\nys = [x * k for x in xs]\n", ("xs",), ("k", "ys")),
    ("lambda-free-names", "f = lambda a, *b, c=d, **e: a + b[0] + c + e['x'] + g\n", ("d", "g"), ("f",)),
    ("lambda-in-comprehension-closure", "fs = [lambda: i + off for i in range(3)]\n", ("range", "off"), ("fs",)),
    ("def-reads-name-assigned-later", "def f():\n    return y\ny = 1\n", (), ("f", "y")),
    ("def-reads-never-assigned", "def f(a):\n    return a + z\n", ("z",), ("f",)),
    ("def-comprehension-first-iterable", "def f():\n    return [x for x in data]\n", ("data",), ("f",)),
    ("def-comprehension-var-not-local", "def f(xs):\n    ys = [x for x in xs]\n    return x\n", ("x",), ("f",)),
    ("def-import-is-local", "def f():\n    import os\n    return os\n", (), ("f",)),
    ("def-reads-name-imported-later", "def f():\n    return np.zeros(3)\nimport numpy as np\n", (), ("f", "np")),
    (
        "def-except-name-is-local",
        "def f():\n    try:\n        pass\n    except E as err:\n        pass\n    return err\n",
        ("E",),
        ("f",),
    ),
    (
        "def-global-skips-enclosing",
        "def outer():\n    n = 1\n    def inner():\n        global n\n        return n\n    return inner\n",
        ("n",),
        ("outer",),
    ),
    ("def-local-not-read", "def f():\n    t = 1\n    return t\n", (), ("f",)),
    ("def-local-assigned-after-use", "def f():\n    print(v)\n    v = 1\n", ("print",), ("f",)),
    (
        "def-defaults-and-decorators-in-order",
        "@deco(opt)\ndef f(a=default, *, b=kw):\n    return a + b\ndefault = 1\n",
        ("deco", "opt", "default", "kw"),
        ("f", "default"),
    ),
    ("def-all-parameter-kinds", "def f(a, /, b, *args, c, **kw):\n    return a, b, args, c, kw\n", (), ("f",)),
    ("def-annotations-not-read", "def f(a: T = 1) -> R:\n    return a\n", (), ("f",)),
    ("def-comprehension", "def f(xs):\n    return [y * w for y in xs]\n", ("w",), ("f",)),
    (
        "nested-def-nonlocal",
        "def outer():\n    count = 0\n    def inner():\n        nonlocal count\n        count += 1\n"
        "        return count + step\n    return inner\n",
        ("step",),
        ("outer",),
    ),
    (
        "nested-def-sees-enclosing-param",
        "def outer(p):\n    def inner():\n        return p + q\n    return inner\n",
        ("q",),
        ("outer",),
    ),
    ("global-store-is-write", "def setup():\n    global cfg\n    cfg = load()\n", ("load",), ("setup", "cfg")),
    ("global-augmented-bound-at-top", "def bump():\n    global n\n    n += 1\nn = 0\n", (), ("bump", "n")),
    ("global-augmented-never-bound", "def bump():\n    global n\n    n += 1\n", ("n",), ("bump", "n")),
    ("walrus-top-level", "if (n := len(xs)) > 3:\n    pass\nprint(n)\n", ("len", "xs", "print"), ("n",)),
    (
        "walrus-in-comprehension",
        "ys = [y for x in xs if (y := f(x))]\nprint(y)\n",
        ("xs", "f", "print", "y"),
        ("y", "ys"),
    ),
    (
        "walrus-short-circuit-not-sure",
        "ok = flag and (v := compute())\nprint(v)\n",
        ("flag", "compute", "print", "v"),
        ("v", "ok"),
    ),
    ("ifexp-walrus-one-branch", "r = (a := 1) if c else 0\na\n", ("c", "a"), ("a", "r")),
    ("ifexp-walrus-both-branches", "r = (a := 1) if c else (a := 2)\na\n", ("c",), ("a", "r")),
    (
        "try-bound-only-in-body",
        "try:\n    v = compute()\nexcept ValueError:\n    pass\nprint(v)\n",
        ("compute", "ValueError", "print", "v"),
        ("v",),
    ),
    (
        "try-bound-in-body-and-all-handlers",
        "try:\n    v = compute()\nexcept ValueError:\n    v = None\nexcept KeyError as err:\n    v = err\nprint(v)\n",
        ("compute", "ValueError", "KeyError", "print"),
        ("v",),
    ),
    ("handler-does-not-see-body-names", "try:\n    a = 1\nexcept E:\n    print(a)\n", ("E", "print", "a"), ("a",)),
    (
        "except-as-unbinds-existing-name",
        "e = 1\ntry:\n    pass\nexcept E as e:\n    pass\nprint(e)\n",
        ("E", "print", "e"),
        ("e",),
    ),
    ("except-as-is-not-a-write", "try:\n    pass\nexcept E as e:\n    pass\nprint(e)\n", ("E", "print", "e"), ()),
    (
        "try-else-finally",
        "try:\n    a = 1\nexcept E:\n    a = 2\nelse:\n    b = a\nfinally:\n    c = 3\nprint(a, b, c)\n",
        ("E", "print", "b"),
        ("a", "b", "c"),
    ),
    ("finally-does-not-see-body-names", "try:\n    a = f()\nfinally:\n    print(a)\n", ("f", "print", "a"), ("a",)),
    (
        "match-captures-and-irrefutable-case",
        "match cmd:\n    case ['go', direction]:\n        where = direction\n    case {'to': dest, **rest}:\n"
        "        where = dest\n    case Point(x=px) | Other(x=px) if px > limit:\n        where = px\n"
        "    case _:\n        where = default\nprint(where, rest)\n",
        ("cmd", "Point", "Other", "limit", "default", "print", "rest"),
        ("direction", "where", "dest", "rest", "px"),
    ),
    (
        "match-without-irrefutable-case",
        "match v:\n    case 1:\n        out = 'one'\n    case Color.RED:\n        out = 'red'\nprint(out)\n",
        ("v", "Color", "print", "out"),
        ("out",),
    ),
    (
        "match-guarded-capture-not-exhaustive",
        "match v:\n    case x if x:\n        out = 1\nout\n",
        ("v", "out"),
        ("x", "out"),
    ),
    ("match-star-capture", "match v:\n    case [first, *others]:\n        pass\n", ("v",), ("first", "others")),
    (
        "class-names-invisible-to-methods",
        "class C(Base):\n    scale = factor\n    doubled = scale * 2\n"
        "    def m(self):\n        return scale + helper\n",
        ("Base", "factor", "scale", "helper"),
        ("C",),
    ),
    ("class-body-reads-earlier-binding", "factor = 2\nclass C:\n    scale = factor\n", (), ("factor", "C")),
    (
        "class-comprehension-cannot-see-class-names",
        "class C:\n    k = 2\n    ys = [k * x for x in xs]\n",
        ("xs", "k"),
        ("C",),
    ),
    (
        "class-comprehension-first-iterable-sees-class-names",
        "class C:\n    xs = [1]\n    ys = [x for x in xs]\n",
        (),
        ("C",),
    ),
    (
        "nested-class-body-cannot-see-outer-class-names",
        "class A:\n    x = 1\n    class B:\n        y = x\n",
        ("x",),
        ("A",),
    ),
    (
        "class-inside-def-comprehension-cannot-see-class-names",
        "def f():\n    class K:\n        k = 2\n        ys = [k for _ in r]\n    return K\n",
        ("r", "k"),
        ("f",),
    ),
    ("class-inside-def-base-is-read", "def f():\n    class K(Base):\n        pass\n    return K\n", ("Base",), ("f",)),
    (
        "class-inside-def",
        "def f():\n    class K:\n        a = 1\n        def m(self):\n            return a + b\n    return K\nb = 2\n",
        ("a",),
        ("f", "b"),
    ),
    (
        "imports",
        "import os.path\nimport numpy as np\n"
        "from collections import OrderedDict as OD, deque\nprint(os, np, OD, deque)\n",
        ("print",),
        ("os", "np", "OD", "deque"),
    ),
    ("decorator-name", "@register\nclass Model:\n    pass\n", ("register",), ("Model",)),
    (
        "annotations-not-read-bare-annotation-not-bound",
        "x: int\ny: Annotated[str, meta] = 'a'\nprint(x)\n",
        ("print", "x"),
        ("y",),
    ),
    ("bare-annotation-is-no-top-level-binding", "def f():\n    return x\nx: int\n", ("x",), ("f",)),
    ("bare-annotation-makes-function-local", "def f():\n    x: int\n    return x\n", (), ("f",)),
    (
        "with-targets",
        "with open(p) as fh, lock:\n    data = fh.read()\nprint(data)\n",
        ("open", "p", "lock", "print"),
        ("fh", "data"),
    ),
    ("unpacking", "first, *rest = items\n[a, (b, c)] = pair\n", ("items", "pair"), ("first", "rest", "a", "b", "c")),
    ("async-def-body", "async def main():\n    return await thing()\n", ("thing",), ("main",)),
    ("shell-fields-and-dollar", "get_ipython().system('ls {path} $other')\n", ("path", "other"), ()),
    ("shell-names-in-text-order", "get_ipython().system('echo $a {b} $c')\n", ("a", "b", "c"), ()),
    ("shell-escapes-and-conversion", "get_ipython().system('echo {{literal}} $$HOME {n!r} {w:>4}')\n", ("n", "w"), ()),
    ("shell-expression-field", "get_ipython().system('echo {len(items)} ${pat}')\n", ("len", "items", "pat"), ()),
    ("shell-unparsable-field-ignored", "get_ipython().system(\"awk '{print $1}' data\")\n", (), ()),
    ("getoutput-assignment", "files = get_ipython().getoutput('ls {d}')\n", ("d",), ("files",)),
    (
        "shell-names-bound-earlier",
        "d = '/tmp'\nfiles = get_ipython().getoutput('ls {d} ${pattern}')\n",
        ("pattern",),
        ("d", "files"),
    ),
    ("shell-inside-def", "def f():\n    return get_ipython().getoutput('ls {where}')\n", ("where",), ("f",)),
    ("magic-arguments-not-analysed", "get_ipython().run_line_magic('time', 'z = secret + 1')\n", (), ()),
    ("empty-cell", "", (), ()),
    ("comment-only-cell", "# nothing here\n\n", (), ()),
]


@pytest.mark.parametrize(("source", "reads", "writes"), [pytest.param(*case[1:], id=case[0]) for case in NAME_CASES])
def test_reads_and_writes(source: str, reads: tuple[str, ...], writes: tuple[str, ...]) -> None:
    result = analyze_cell(source)
    assert result.reads == reads
    assert result.writes == writes


# (id, source, expected reads, expected mutated, expected deleted)
MUTATION_CASES: list[tuple[str, str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = [
    ("subscript-store", "df['c'] = 1\n", ("df",), ("df",), ()),
    ("attribute-store", "obj.x = 1\n", ("obj",), ("obj",), ()),
    ("deep-attribute-store", "a.b.c = value\n", ("value", "a"), ("a",), ()),
    ("augmented-attribute-of-item", "a[0].x += 1\n", ("a",), ("a",), ()),
    ("augmented-subscript", "counts[k] += 1\n", ("counts", "k"), ("counts",), ()),
    ("tuple-target-with-attribute", "x, y.z = 1, 2\n", ("y",), ("y",), ()),
    ("for-attribute-target", "for obj.attr in r:\n    pass\n", ("r", "obj"), ("obj",), ()),
    ("with-attribute-target", "with open(p) as self.f:\n    pass\n", ("open", "p", "self"), ("self",), ()),
    ("inside-if-block", "if flag:\n    cfg.debug = True\n", ("flag", "cfg"), ("cfg",), ()),
    ("inside-try-block", "try:\n    m[k] = v\nexcept KeyError:\n    pass\n", ("v", "m", "k", "KeyError"), ("m",), ()),
    ("comprehension-attribute-target", "ys = [1 for o.attr in r]\n", ("r", "o"), ("o",), ()),
    ("own-object-not-mutated", "d = {}\nd['k'] = 1\n", (), (), ()),
    ("call-result-has-no-root", "f().x = 1\n", ("f",), (), ()),
    ("inside-def-not-counted", "def f():\n    shared.x = 1\n", ("shared",), (), ()),
    ("inside-class-body-not-counted", "class C:\n    registry['C'] = 1\n", ("registry",), (), ()),
    ("method-call-not-detected", "xs.append(1)\n", ("xs",), (), ()),
    ("del-subscript", "del d['k']\n", ("d",), ("d",), ()),
    ("del-outside-name", "del x\n", ("x",), (), ("x",)),
    ("del-own-name", "x = 1\ndel x\n", (), (), ("x",)),
    ("del-then-read-again", "x = 1\ndel x\nprint(x)\n", ("print", "x"), (), ("x",)),
    ("del-several", "del a, b[0]\ndel a\n", ("a", "b"), ("b",), ("a",)),
    ("del-in-if-is-deleted", "if c:\n    del x\n", ("c", "x"), (), ("x",)),
    ("del-inside-class-body-not-counted", "class C:\n    tmp = 1\n    del tmp\n", (), (), ()),
    ("del-inside-def-not-counted", "def f():\n    del y\n", (), (), ()),
]


@pytest.mark.parametrize(
    ("source", "reads", "mutated", "deleted"), [pytest.param(*case[1:], id=case[0]) for case in MUTATION_CASES]
)
def test_mutated_and_deleted(
    source: str, reads: tuple[str, ...], mutated: tuple[str, ...], deleted: tuple[str, ...]
) -> None:
    result = analyze_cell(source)
    assert (result.reads, result.mutated, result.deleted) == (reads, mutated, deleted)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("x\n", True, id="bare-name"),
        pytest.param("x = 1\nx\n", True, id="assignment-then-name"),
        pytest.param("get_ipython().run_line_magic('time', 'f()')\n", True, id="line-magic"),
        pytest.param("x\ny = 1\n", False, id="expression-not-last"),
        pytest.param("x = 1\n", False, id="assignment"),
        pytest.param("if a:\n    b\n", False, id="expression-nested-in-if"),
        pytest.param("", False, id="empty"),
        pytest.param("# only a comment\n", False, id="comment-only"),
    ],
)
def test_trailing_expression(source: str, expected: bool) -> None:
    assert analyze_cell(source).trailing_expression is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("await f()\n", True, id="await"),
        pytest.param("if c:\n    r = await f()\n", True, id="await-in-if"),
        pytest.param("async with lock:\n    pass\n", True, id="async-with"),
        pytest.param("async for x in stream:\n    pass\n", True, id="async-for"),
        pytest.param("ys = [x async for x in stream]\n", True, id="async-comprehension"),
        pytest.param(
            "async def f():\n    await g()\n    async with h():\n        pass\n", False, id="only-in-async-def"
        ),
        pytest.param("x = 1\n", False, id="no-await"),
    ],
)
def test_top_level_await(source: str, expected: bool) -> None:
    assert analyze_cell(source).top_level_await is expected


def test_magics_found_with_line_and_kind() -> None:
    source = (
        "get_ipython().run_line_magic('time', 'z = 1')\n"
        "x = 1\n"
        "get_ipython().run_cell_magic('timeit', '', 'x=1\\n')\n"
        "def f():\n"
        "    return get_ipython().run_line_magic('pinfo', 'obj')\n"
    )
    result = analyze_cell(source)
    assert result.magics == (
        MagicUse(lineno=1, name="time", kind="line"),
        MagicUse(lineno=3, name="timeit", kind="cell"),
        MagicUse(lineno=5, name="pinfo", kind="line"),
    )
    assert result.shell_commands == 0
    assert result.reads == ()  # neither `z` nor `obj` (magic arguments) is analysed


def test_magics_ordered_by_line() -> None:
    # The assigned value (line 2) is evaluated before the target (line 1); magics still come in line order.
    source = "d[get_ipython().run_line_magic('first', '')] = (\n    get_ipython().run_line_magic('second', ''))\n"
    assert [m.name for m in analyze_cell(source).magics] == ["first", "second"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            "get_ipython().system('ls')\nfiles = get_ipython().getoutput('ls')\n"
            "def f():\n    get_ipython().system('pwd')\n",
            3,
            id="system-getoutput-and-in-def",
        ),
        pytest.param("os.system('ls')\nsystem('ls')\nget_ipython().run_line_magic('sx', 'ls')\n", 0, id="lookalikes"),
        pytest.param("x = 1\n", 0, id="none"),
    ],
)
def test_shell_commands_counted(source: str, expected: int) -> None:
    assert analyze_cell(source).shell_commands == expected


@pytest.mark.parametrize(
    ("raw", "reads", "writes", "magic_names", "shell_commands"),
    [
        pytest.param("!ls {x} $y\n", ("x", "y"), (), (), 1, id="shell-escape"),
        pytest.param("files = !ls {d}\n", ("d",), ("files",), (), 1, id="shell-assignment"),
        pytest.param("%time z = 1\n", (), (), ("time",), 0, id="line-magic"),
        pytest.param("%%timeit\nx = 1\n", (), (), ("timeit",), 0, id="cell-magic"),
        pytest.param("obj?\n", (), (), ("pinfo",), 0, id="help"),
    ],
)
def test_real_ipython_transforms(
    raw: str, reads: tuple[str, ...], writes: tuple[str, ...], magic_names: tuple[str, ...], shell_commands: int
) -> None:
    """The call shapes this module matches are the ones IPython's transformer really produces."""
    transformer = pytest.importorskip("IPython.core.inputtransformer2").TransformerManager()
    result = analyze_cell(transformer.transform_cell(raw))
    assert (result.reads, result.writes) == (reads, writes)
    assert tuple(m.name for m in result.magics) == magic_names
    assert result.shell_commands == shell_commands


@pytest.mark.parametrize(
    ("source", "module", "lineno"),
    [
        pytest.param("from os import *\n", "os", 1, id="top-level"),
        pytest.param("x = 1\nif x:\n    from numpy.linalg import *\n", "numpy.linalg", 3, id="inside-if"),
        pytest.param(
            "try:\n    pass\nexcept E:\n    from .sibling import *\n", ".sibling", 4, id="relative-in-handler"
        ),
    ],
)
def test_star_import_rejected(source: str, module: str, lineno: int) -> None:
    with pytest.raises(StarImportError) as info:
        analyze_cell(source)
    message = str(info.value)
    assert f"from {module} import *" in message
    assert f"line {lineno}" in message
    assert "explicitly" in message
    assert isinstance(info.value, ValueError)


def test_syntax_error_propagates_unchanged() -> None:
    with pytest.raises(SyntaxError) as info:
        analyze_cell("x = = 1\n")
    assert type(info.value) is SyntaxError
    assert info.value.lineno == 1


def test_result_is_frozen_with_exact_fields() -> None:
    result = analyze_cell("y = x\n")
    assert isinstance(result, CellAnalysis)
    assert [f.name for f in dataclasses.fields(CellAnalysis)] == [
        "reads",
        "writes",
        "mutated",
        "deleted",
        "unbinds",
        "magics",
        "shell_commands",
        "trailing_expression",
        "top_level_await",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.reads = ()  # type: ignore[misc]


# Names only a string evaluator reads: (id, cell, expected reads). Only names the notebook defines are shipped, so a
# column name reported as a read costs nothing; a missing variable makes the worker raise NameError.
STRING_CASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("builtin-eval", "r = eval('limit + 1')\n", ("eval", "limit")),
    ("builtin-exec", "exec('y = x * 2\\nprint(y)')\n", ("exec", "x", "print", "y")),
    ("eval-after-own-binding", "limit = 3\nr = eval('limit + 1')\n", ("eval",)),
    ("eval-before-binding", "r = eval('limit')\nlimit = 3\n", ("eval", "limit")),
    ("query-at-names-only", "r = df.query('a > @limit and b < @other')\n", ("df", "limit", "other")),
    ("query-at-with-space", "df.query('a > @ limit')\n", ("df", "limit")),
    ("query-expr-keyword", "df.query(expr='a == @x', engine='python')\n", ("df", "x")),
    ("query-at-inside-nested-string", "df.query('email == \"a@b.com\"')\n", ("df",)),
    ("query-backticks", "df.query('`my col` > @low')\n", ("df", "low")),
    ("query-multiline", "df.query(\"\"\"\n    a > @low\n    and b < @high\n\"\"\")\n", ("df", "low", "high")),
    ("frame-eval-assignment", "df.eval('c = a + @offset')\n", ("df", "offset")),
    ("pd-eval-bare-names", "pd.eval('df1 + df2 * @k')\n", ("pd", "df1", "df2", "k")),
    ("pandas-eval-bare-names", "pandas.eval('df1 + 1')\n", ("pandas", "df1")),
    ("numexpr", "ne.evaluate('a * b + 2')\n", ("ne", "a", "b")),
    ("numexpr-module-name", "numexpr.evaluate(ex='a ** 2')\n", ("numexpr", "a")),
    ("f-string-not-a-literal", "eval(f'{x} + 1')\n", ("eval", "x")),
    ("variable-argument", "eval(expr)\n", ("eval", "expr")),
    ("unparseable-ignored", "eval('x +')\ndf.query('a >>> @b')\n", ("eval", "df")),
    ("other-method-ignored", "model.evaluate('x')\nctx.run('y')\n", ("model", "ctx")),
    ("no-arguments", "model.eval()\n", ("model",)),
    ("inside-function-read-later", "def f():\n    return eval('limit * 2')\n", ("eval", "limit")),
    ("inside-function-own-parameter", "def f(limit):\n    return df.query('a > @limit')\n", ("df",)),
    ("inside-function-cell-binds-it", "def f():\n    return eval('limit')\nlimit = 3\n", ("eval",)),
    ("inside-lambda", "g = lambda: eval('z')\n", ("eval", "z")),
    ("inside-comprehension", "[eval('i + k') for i in r]\n", ("r", "eval", "k")),
]


@pytest.mark.parametrize(("source", "reads"), [pytest.param(*case[1:], id=case[0]) for case in STRING_CASES])
def test_names_inside_evaluated_strings_are_read(source: str, reads: tuple[str, ...]) -> None:
    assert analyze_cell(source).reads == reads


@pytest.mark.parametrize(
    ("text", "bare", "expected"),
    [
        pytest.param("a > @limit", False, ["limit"], id="at-only"),
        pytest.param("a > @limit", True, ["a", "limit"], id="bare-too"),
        pytest.param("x in @xs and y == 'z@w'", False, ["xs"], id="at-in-string-constant"),
        pytest.param("", True, [], id="empty"),
        pytest.param("\x00", True, [], id="null-byte"),
        pytest.param("a > > @b", False, [], id="does-not-parse"),
    ],
)
def test_names_in_expression(text: str, bare: bool, expected: list[str]) -> None:
    assert names_in_expression(text, bare_are_variables=bare, pandas_syntax=True) == expected


# (id, cell, expected unbinds): module-scope names a normal cell may leave unbound, whether it read them or not.
UNBIND_CASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("except-as", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    pass\n", ("e",)),
    ("except-star-as", "try:\n    pass\nexcept* ValueError as eg:\n    pass\n", ("eg",)),
    ("several-handlers", "try:\n    f()\nexcept KeyError as k:\n    pass\nexcept Exception as e:\n    pass\n",
     ("k", "e")),
    ("bare-except-binds-nothing", "try:\n    f()\nexcept Exception:\n    pass\n", ()),
    ("del-own-name", "x = 1\ndel x\n", ("x",)),
    ("del-outside-name", "del x\n", ("x",)),
    ("del-item-unbinds-nothing", "del d['k']\n", ()),
    ("nested-try", "for i in r:\n    try:\n        g()\n    except E as err:\n        pass\n", ("err",)),
    ("global-del-in-function", "x = 1\ndef f():\n    global x\n    del x\n", ("x",)),
    ("except-as-in-function-is-local", "def f():\n    try:\n        g()\n    except E as e:\n        pass\n", ()),
    ("except-as-in-class-body", "class C:\n    try:\n        g()\n    except E as e:\n        pass\n", ()),
    ("del-in-class-body", "class C:\n    t = 1\n    del t\n", ()),
]


@pytest.mark.parametrize(("source", "unbinds"), [pytest.param(*case[1:], id=case[0]) for case in UNBIND_CASES])
def test_names_the_cell_may_unbind(source: str, unbinds: tuple[str, ...]) -> None:
    if "except*" in source and sys.version_info < (3, 11):
        source = source.replace("except*", "except")
    assert analyze_cell(source).unbinds == unbinds


def test_except_as_name_is_neither_read_nor_written() -> None:
    result = analyze_cell("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    print(e)\n")
    assert "e" not in result.reads and "e" not in result.writes
