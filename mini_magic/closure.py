"""Static analysis of one notebook cell: the names it needs from the notebook and the names it binds there.

The input is the cell's source *after* IPython's ``transform_cell``, so shell escapes and magics appear as
``get_ipython().system(...)`` / ``get_ipython().run_line_magic(...)`` calls. Only the stdlib ``ast`` module is
used, so this runs (and is tested) without IPython.

When unsure, ``reads`` errs towards reporting a name: the caller captures only the reported names that exist in
the notebook namespace, so an extra name costs one dictionary lookup while a missing one makes the remote run
fail with ``NameError``.

Annotations (``x: T``, ``def f(a: T) -> T``) are never analysed: whether they are evaluated at all depends on
``from __future__ import annotations`` (PEP 563) and the Python version (PEP 649), and a cell rarely needs a
value only for an annotation, so counting them would mostly capture values the cell never uses.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from dataclasses import dataclass

from .closure_function import analyze_function
from .closure_scope import Bindings, Context, MagicUse, Scope, defaults

__all__ = ["CellAnalysis", "MagicUse", "StarImportError", "analyze_cell"]


@dataclass(frozen=True)
class CellAnalysis:
    """What :func:`analyze_cell` found out about a cell. Name tuples are ordered by first occurrence.

    Attributes:
        reads: Names the cell needs from the notebook namespace (builtins included: they may be shadowed there).
        writes: Names the cell binds at module scope.
        mutated: Outside names whose item or attribute the cell's top-level code stores to or deletes.
        deleted: Names in top-level ``del name`` statements.
        unbinds: Module-scope names the cell may leave unbound: ``del`` targets, ``except ... as`` names (Python
            deletes them when the handler ends) and globals a function of the cell deletes.
        magics: Magic calls anywhere in the cell.
        shell_commands: Number of ``get_ipython().system`` / ``getoutput`` calls.
        trailing_expression: The last top-level statement is an expression statement.
        top_level_await: The cell awaits (``await``, ``async for/with``, async comprehension) outside any def.
    """

    reads: tuple[str, ...]
    writes: tuple[str, ...]
    mutated: tuple[str, ...]
    deleted: tuple[str, ...]
    unbinds: tuple[str, ...]
    magics: tuple[MagicUse, ...]
    shell_commands: int
    trailing_expression: bool
    top_level_await: bool


class StarImportError(ValueError):
    """The cell does ``from module import *``, which hides the names it binds from the analysis."""


@functools.lru_cache(maxsize=256)  # a cell run again is not analysed again (the analysis is immutable)
def analyze_cell(source: str) -> CellAnalysis:
    """Analyse a transformed cell's source without running it.

    Args:
        source: The cell after ``shell.transform_cell``.

    Returns:
        The cell's :class:`CellAnalysis`.

    Raises:
        SyntaxError: The source does not parse (propagated unchanged from :func:`ast.parse`).
        StarImportError: The cell's top-level code contains ``from module import *``.
    """
    tree = ast.parse(source)
    ctx = Context(top_level_names=set(Bindings.of(tree.body).stores))
    _OrderedScope(ctx).run(tree.body)
    return CellAnalysis(
        reads=tuple(ctx.reads),
        writes=tuple(ctx.writes),
        mutated=tuple(ctx.mutated),
        deleted=tuple(ctx.deleted),
        unbinds=tuple(ctx.unbinds),
        magics=tuple(sorted(ctx.magics, key=lambda m: m.lineno)),
        shell_commands=ctx.shell_commands,
        trailing_expression=bool(tree.body) and isinstance(tree.body[-1], ast.Expr),
        top_level_await=ctx.top_level_await,
    )


def _root_name(target: ast.expr) -> str | None:
    """``a`` for ``a.b[0].c``-shaped targets, None when the object is not a plain name (``f().x``)."""
    while isinstance(target, (ast.Attribute, ast.Subscript)):
        target = target.value
    return target.id if isinstance(target, ast.Name) else None


def _irrefutable(pattern: ast.pattern) -> bool:
    """Whether a case pattern matches every subject (``case _`` / ``case name``, possibly in an or-pattern)."""
    if isinstance(pattern, ast.MatchAs):
        return pattern.pattern is None or _irrefutable(pattern.pattern)
    return isinstance(pattern, ast.MatchOr) and any(_irrefutable(p) for p in pattern.patterns)


class _OrderedScope(Scope):
    """Walks the cell's module-level code (or a class body in it) in execution order.

    ``bound`` holds the names this scope has *surely* bound at the current point; control flow joins keep only
    the names bound on every path. A load of a name not surely bound is a read from the notebook.
    """

    def __init__(self, ctx: Context, module: _OrderedScope | None = None) -> None:
        super().__init__(ctx)
        self.module = module  # None for the module itself; the module's scope for a class body
        self.bound: set[str] = set()

    def visit(self, node: ast.AST) -> None:
        # Function bodies never reach this walker, so any await it meets is at the cell's top level.
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            self.ctx.top_level_await = True
        super().visit(node)

    def _outside(self, name: str) -> bool:
        """Whether loading ``name`` here would take it from the notebook namespace."""
        if self._in_comprehension(name):
            return False
        if self.module is None:
            return name not in self.bound
        # A class body sees its own names, then module names; its comprehensions see only module names.
        return (self.comprehensions or name not in self.bound) and name not in self.module.bound

    def _load(self, name: str) -> bool:
        outside = self._outside(name)
        if outside:
            self.ctx.read(name)
        return outside

    def _bind(self, name: str) -> None:
        if self.module is None:
            self.ctx.writes.setdefault(name)
        # A walrus inside a comprehension binds only if the comprehension iterates: a write, never sure at
        # module level, but later parts of the same iteration do see it.
        (self.comprehensions[-1] if self.comprehensions else self.bound).add(name)

    def _target(self, target: ast.expr, bind: Callable[[str], None] | None = None) -> None:
        bind = bind or self._bind
        if isinstance(target, ast.Name):
            bind(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._target(element, bind)
        elif isinstance(target, ast.Starred):
            self._target(target.value, bind)
        else:
            self._store_into(target)

    def _store_into(self, target: ast.expr) -> None:
        """``a.b = ...`` / ``a[k] = ...`` / ``del a[k]``: loads ``a`` and mutates it."""
        root = _root_name(target)
        outside = root is not None and self._outside(root)
        self.generic_visit(target)  # the object and subscript expressions are ordinary loads
        if root is not None and outside and self.module is None:  # class bodies do not count
            self.ctx.mutated.setdefault(root)

    def _unbind(self, name: str) -> None:
        self._load(name)  # `del x` fails unless x exists
        self.bound.discard(name)
        if self.module is None:
            self.ctx.deleted.setdefault(name)
            self.ctx.unbind(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):  # stores and dels are handled by the statements that contain them
            self._load(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self._target(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self._load(node.target.id)
            self.visit(node.value)
            self._bind(node.target.id)
        else:
            self._store_into(node.target)
            self.visit(node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        # The annotation is deliberately not visited (see the module docstring).
        if node.value is not None:
            self.visit(node.value)
            self._target(node.target)
        elif not isinstance(node.target, ast.Name):
            self.generic_visit(node.target)  # `a.b: T` still evaluates `a`, but stores nothing

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._bind(node.target.id)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._target(target, self._unbind)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._bind(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                module = "." * node.level + (node.module or "")
                raise StarImportError(
                    f"line {node.lineno}: `from {module} import *` cannot be analysed, so %%thither cannot tell "
                    f"which names the cell binds; import the names explicitly (`from {module} import a, b`)."
                )
            self._bind(alias.asname or alias.name)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.run([*node.decorator_list, *defaults(node.args)])  # evaluated now, in this order
        self._bind(node.name)  # before the body, whose `global` stores happen only when it is called
        analyze_function(self.ctx, node, frozenset())

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.run(defaults(node.args))
        analyze_function(self.ctx, node, frozenset().union(*self.comprehensions))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.run([*node.decorator_list, *node.bases, *node.keywords])
        # The body runs now, in its own namespace; nested class bodies do not see each other's names.
        _OrderedScope(self.ctx, self.module or self).run(node.body)
        self._bind(node.name)

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        before = set(self.bound)
        self.run(node.body)
        after_body, self.bound = self.bound, before
        self.run(node.orelse)
        self.bound &= after_body

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        before = set(self.bound)
        self._target(node.target)
        self.run(node.body)
        self.bound &= before  # the body may run zero times
        self.run(node.orelse)
        self.bound &= before  # `break` skips the else clause

    visit_AsyncFor = visit_For

    def visit_While(self, node: ast.While) -> None:
        self.visit(node.test)  # always evaluated at least once
        before = set(self.bound)
        self.run([*node.body, *node.orelse])
        self.bound &= before

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self._target(item.optional_vars)
        self.run(node.body)

    visit_AsyncWith = visit_With

    def visit_Try(self, node: ast.Try) -> None:  # also `try/except*` (3.11+ ast.TryStar, same fields)
        before = set(self.bound)
        self.run([*node.body, *node.orelse])
        joined = set(self.bound)
        # A handler may start anywhere in the body: only what was bound before it and not deleted in it is sure.
        handler_start = before & joined
        for handler in node.handlers:
            self.bound = set(handler_start)
            if handler.type is not None:
                self.visit(handler.type)
            if handler.name:
                self.bound.add(handler.name)  # no write: Python deletes the name when the handler ends
                if self.module is None:
                    self.ctx.unbind(handler.name)
            self.run(handler.body)
            self.bound.discard(handler.name or "")
            joined &= self.bound
        if node.finalbody:
            start = before & joined
            self.bound = set(start)
            self.run(node.finalbody)
            joined = (joined - (start - self.bound)) | self.bound
        self.bound = joined

    visit_TryStar = visit_Try  # type: ignore[assignment, unused-ignore]  # same fields as ast.Try

    def visit_Match(self, node: ast.Match) -> None:
        self.visit(node.subject)
        before = set(self.bound)
        outcomes: list[set[str]] = []
        for case in node.cases:
            self.bound = set(before)
            self.run([case.pattern, *([case.guard] if case.guard else []), *case.body])
            outcomes.append(self.bound)
        exhaustive = any(c.guard is None and _irrefutable(c.pattern) for c in node.cases)
        self.bound = set.intersection(*outcomes) if exhaustive else set.intersection(before, *outcomes)

    def visit_MatchAs(self, node: ast.MatchAs | ast.MatchStar) -> None:
        self.generic_visit(node)
        if node.name:
            self._bind(node.name)

    visit_MatchStar = visit_MatchAs

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self._bind(node.rest)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        self.visit(node.values[0])
        before = set(self.bound)
        self.run(node.values[1:])  # short-circuiting: may not run
        self.bound &= before

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.visit(node.test)
        before = set(self.bound)
        self.visit(node.body)
        after_body, self.bound = self.bound, before
        self.visit(node.orelse)
        self.bound &= after_body

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        generators = node.generators
        self.visit(generators[0].iter)  # the first iterable is evaluated in the enclosing scope
        self.comprehensions.append(set())
        for index, generator in enumerate(generators):
            if index:
                self.visit(generator.iter)
            self.ctx.top_level_await |= bool(generator.is_async)
            self._target(generator.target, self.comprehensions[-1].add)
            self.run(generator.ifs)
        self.run([node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt])
        self.comprehensions.pop()

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def visit_TypeAlias(self, node: ast.AST) -> None:
        # Python 3.12+ `type X = ...` binds X; its value is evaluated lazily, like an annotation, so not read.
        self._bind(node.name.id)  # type: ignore[attr-defined]
