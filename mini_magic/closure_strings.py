"""Names that well-known evaluators read from inside a string literal: ``eval('x + 1')``, ``df.query('a > @limit')``.

To the AST such a string is a constant, so without this the names in it would never be captured and the worker
would raise ``NameError`` (pandas: ``UndefinedVariableError``) for a name the notebook defines. The evaluators:

* builtin ``eval(...)`` / ``exec(...)``, ``pd.eval(...)``, ``numexpr.evaluate(...)`` (``ne.evaluate``): every name in
  the string is a variable;
* any other ``<obj>.eval(...)`` / ``<obj>.query(...)`` (pandas ``DataFrame`` / ``Series``): bare names are columns,
  ``@name`` is a variable, so only ``@name`` counts.

Only a literal first argument (or ``expr=`` / ``ex=``) is read: an f-string or a variable is not a literal. The rules
are loose on purpose, since a reported name costs one dictionary lookup in the kernel (only names the notebook
defines are shipped); a string that does not parse is left to the evaluator to report when the cell runs.
"""

from __future__ import annotations

import ast
import re
import textwrap

_AT_PREFIX = "__mini_magic_at_"  # `@limit` is parsed as this prefix + `limit`
_COLUMN = "__mini_magic_column__"  # what a backtick-quoted column name is parsed as
_AT_NAME = re.compile(r"@\s*(?=[A-Za-z_])")
_BACKTICKED = re.compile(r"`[^`]*`")
_PANDAS = frozenset({"pd", "pandas"})
_NUMEXPR = frozenset({"ne", "numexpr"})
_EXPRESSION_KEYWORDS = ("expr", "ex")  # pandas' and numexpr's name for the expression parameter


def evaluated_names(call: ast.Call) -> list[str]:
    """The variables a call to a known evaluator reads from its string argument, in order; [] for other calls."""
    rule = _evaluator_rule(call.func)
    text = _literal_expression(call) if rule is not None else None
    if rule is None or text is None:
        return []
    bare_are_variables, pandas_syntax = rule
    return names_in_expression(text, bare_are_variables=bare_are_variables, pandas_syntax=pandas_syntax)


def names_in_expression(text: str, *, bare_are_variables: bool, pandas_syntax: bool) -> list[str]:
    """Names ``text`` reads, in order of appearance: with ``pandas_syntax`` the ``@name`` ones (and backtick-quoted
    columns are skipped), plus the bare ones when ``bare_are_variables``. [] when the text does not parse."""
    if pandas_syntax:
        text = _AT_NAME.sub(_AT_PREFIX, _BACKTICKED.sub(_COLUMN, text))
    tree = _parse(text)
    if tree is None:
        return []
    loads = sorted(
        (node for node in ast.walk(tree) if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store)),
        key=lambda node: (node.lineno, node.col_offset),
    )
    names: list[str] = []
    for node in loads:
        if node.id.startswith(_AT_PREFIX):
            names.append(node.id[len(_AT_PREFIX):])
        elif bare_are_variables and node.id != _COLUMN:
            names.append(node.id)
    return list(dict.fromkeys(names))


def _evaluator_rule(func: ast.expr) -> tuple[bool, bool] | None:
    """``(bare names are variables, pandas @-syntax)`` for a known evaluator, else None."""
    if isinstance(func, ast.Name):
        return (True, False) if func.id in ("eval", "exec") else None
    if not isinstance(func, ast.Attribute):
        return None
    owner = func.value.id if isinstance(func.value, ast.Name) else None
    if func.attr == "evaluate" and owner in _NUMEXPR:
        return True, False
    if func.attr == "eval" and owner in _PANDAS:
        return True, True
    if func.attr in ("eval", "query"):
        return False, True
    return None


def _literal_expression(call: ast.Call) -> str | None:
    candidates = [*call.args[:1], *(k.value for k in call.keywords if k.arg in _EXPRESSION_KEYWORDS)]
    for node in candidates:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
    return None


def _parse(text: str) -> ast.Module | None:
    """The text as code; an expression split over lines (a triple-quoted query) parses inside parentheses."""
    source = textwrap.dedent(text).strip()
    for candidate in (source, f"(\n{source}\n)"):
        try:
            return ast.parse(candidate)
        except (SyntaxError, ValueError):  # ValueError: a null byte
            continue
    return None
