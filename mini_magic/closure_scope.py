"""What the closure analysis's scope walkers share: the results of one cell, the names a scope binds, and the
handling of calls whose arguments name variables (IPython magics and shell commands, string evaluators).

Split from :mod:`mini_magic.closure` (which walks the cell's module-level code) and
:mod:`mini_magic.closure_function` (which walks the bodies of defs and lambdas); nothing here is public API.
"""

from __future__ import annotations

import ast
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .closure_strings import evaluated_names

# The kernel and the worker both provide these; capturing them would make no sense.
_NEVER_READ = frozenset({"get_ipython", "__builtins__"})
_MAGIC_KINDS = {"run_line_magic": "line", "run_cell_magic": "cell"}
_SHELL_METHODS = frozenset({"system", "getoutput"})
# IPython expands `$name` / `${name}` in shell commands; `$$` is its escape for a literal `$`.
_DOLLAR = re.compile(r"\$\$|\$\{?([A-Za-z_]\w*)")


@dataclass(frozen=True)
class MagicUse:
    """One ``get_ipython().run_line_magic`` / ``run_cell_magic`` call in the cell.

    Attributes:
        lineno: 1-based line of the call in the analysed source.
        name: The magic's name, e.g. ``"time"``.
        kind: ``"line"`` or ``"cell"``.
    """

    lineno: int
    name: str
    kind: str


@dataclass
class Context:
    """Results shared by all the scopes of one cell (dicts serve as insertion-ordered sets)."""

    top_level_names: set[str]  # every name some top-level statement binds, in any branch
    reads: dict[str, None] = field(default_factory=dict)
    writes: dict[str, None] = field(default_factory=dict)
    mutated: dict[str, None] = field(default_factory=dict)
    deleted: dict[str, None] = field(default_factory=dict)
    unbinds: dict[str, None] = field(default_factory=dict)
    magics: list[MagicUse] = field(default_factory=list)
    shell_commands: int = 0
    top_level_await: bool = False

    def read(self, name: str) -> None:
        if name not in _NEVER_READ:
            self.reads.setdefault(name)

    def read_later(self, name: str) -> None:
        """A module-scope name used by code that runs later (a function body).

        By the time the function is called the cell has most likely bound every name it binds at top level,
        wherever that binding is, so only names the cell never binds at top level come from the notebook.
        """
        if name not in self.top_level_names:
            self.read(name)

    def unbind(self, name: str) -> None:
        """A module-scope name the cell may leave unbound (``del``, the end of an ``except ... as`` handler)."""
        if name not in _NEVER_READ:
            self.unbinds.setdefault(name)

    def note_ipython_call(self, node: ast.Call) -> list[str]:
        """Record a magic or shell call; return the names its command string interpolates, in order."""
        method = _ipython_method(node)
        first = node.args[0] if node.args else None
        if method in _MAGIC_KINDS and isinstance(first, ast.Constant) and isinstance(first.value, str):
            self.magics.append(MagicUse(node.lineno, first.value, _MAGIC_KINDS[method]))
        elif method in _SHELL_METHODS:
            self.shell_commands += 1
            return [
                name
                for arg in node.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                for name in _interpolated_names(arg.value)
            ]
        return []


def _ipython_method(node: ast.Call) -> str | None:
    """``m`` for a call ``get_ipython().m(...)``, else None."""
    func = node.func
    if (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Call)
        and not func.value.args
        and isinstance(func.value.func, ast.Name)
        and func.value.func.id == "get_ipython"
    ):
        return func.attr
    return None


def _interpolated_names(command: str) -> list[str]:
    """Names IPython will look up when it expands ``{expr}`` fields and ``$name`` in a shell command."""
    found: list[tuple[int, str]] = []
    for start, text in _brace_fields(command):
        # `{x!r}` / `{x:>8}` do not parse whole; their expression is the part before the conversion or spec.
        for candidate in (text, re.split(r"[!:]", text, maxsplit=1)[0]):
            try:
                expr = ast.parse(candidate.strip(), mode="eval")
            except (SyntaxError, ValueError):
                continue
            found += [(start, n.id) for n in ast.walk(expr) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
            break
    found += [(m.start(), m.group(1)) for m in _DOLLAR.finditer(command) if m.group(1)]
    return [name for _, name in sorted(found, key=lambda item: item[0])]


def _brace_fields(text: str) -> Iterator[tuple[int, str]]:
    """``(offset, content)`` of each top-level ``{...}`` field, skipping the ``{{`` / ``}}`` escapes."""
    i = 0
    while i < len(text):
        if text.startswith(("{{", "}}"), i):
            i += 2
        elif text[i] == "{":
            depth, j = 1, i + 1
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth == 0:
                yield i, text[i + 1 : j - 1]
            i = j
        else:
            i += 1


def defaults(args: ast.arguments) -> list[ast.expr]:
    return [*args.defaults, *(d for d in args.kw_defaults if d is not None)]


class Bindings(ast.NodeVisitor):
    """Names one scope's own code binds anywhere, ignoring order (nested scopes' bodies are not entered)."""

    def __init__(self) -> None:
        self.stores: dict[str, None] = {}
        self.unbinding: set[str] = set()  # made local without a value left behind: del, bare annotation, except-as
        self.globals: set[str] = set()
        self.nonlocals: set[str] = set()
        self._comprehensions = 0

    @classmethod
    def of(cls, nodes: Iterable[ast.AST]) -> Bindings:
        bindings = cls()
        for node in nodes:
            bindings.visit(node)
        return bindings

    def local_names(self, params: Iterable[str] = ()) -> set[str]:
        """The scope's local names by Python's rule: bound anywhere in it and not declared global/nonlocal."""
        return (set(params) | set(self.stores) | self.unbinding) - self.globals - self.nonlocals

    def _store(self, name: str | None) -> None:
        if name is not None:
            self.stores.setdefault(name)

    def visit_Name(self, node: ast.Name) -> None:
        # Inside a comprehension, plain stores are its own iteration variables; walrus is handled below.
        if isinstance(node.ctx, ast.Store) and not self._comprehensions:
            self._store(node.id)
        elif isinstance(node.ctx, ast.Del):
            self.unbinding.add(node.id)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._store(node.target.id)  # PEP 572: binds in the scope around any comprehensions
        self.visit(node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is None and isinstance(node.target, ast.Name):
            self.unbinding.add(node.target.id)
            return
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self._store(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._store(node.name)
        for expr in [*node.decorator_list, *defaults(node.args)]:
            self.visit(expr)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in defaults(node.args):
            self.visit(expr)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._store(node.name)
        for expr in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(expr)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.unbinding.add(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs | ast.MatchStar) -> None:
        self._store(node.name)
        self.generic_visit(node)

    visit_MatchStar = visit_MatchAs

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self._store(node.rest)
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        self.globals.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.nonlocals.update(node.names)

    def _comprehension(self, node: ast.AST) -> None:
        self._comprehensions += 1
        self.generic_visit(node)
        self._comprehensions -= 1

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension


class Scope(ast.NodeVisitor, ABC):
    """What both scope walkers share: the results, the comprehension stack and IPython-call handling."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.comprehensions: list[set[str]] = []  # names local to each comprehension being walked

    def run(self, body: Iterable[ast.AST]) -> None:
        for node in body:
            self.visit(node)

    def _in_comprehension(self, name: str) -> bool:
        return any(name in names for names in self.comprehensions)

    @abstractmethod
    def _load(self, name: str) -> object:
        """Record a load of ``name``; each walker resolves names by its own scoping rule."""

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)  # the arguments are evaluated before the call reads the names they mention
        for name in (*self.ctx.note_ipython_call(node), *evaluated_names(node)):
            self._load(name)

