"""The closure analysis of nested scopes: def and lambda bodies, and class bodies inside them.

Their code runs later (when the function is called), so order does not matter there: a module-scope name they use
comes from the notebook unless the cell binds it somewhere at top level (see :meth:`Context.read_later`).
"""

from __future__ import annotations

import ast

from .closure_scope import Bindings, Context, Scope, defaults


class FunctionScope(Scope):
    """Order-free walk of a nested scope: a def or lambda body, or a class body inside one.

    Its code runs later, so a module-scope name it uses goes through :meth:`Context.read_later`.
    """

    def __init__(
        self, ctx: Context, local: set[str], enclosing: frozenset[str], declared_global: set[str], is_class: bool
    ) -> None:
        super().__init__(ctx)
        self.local = local
        self.enclosing = enclosing  # locals of the enclosing function scopes, visible as closures
        self.declared_global = declared_global
        self.is_class = is_class

    def _load(self, name: str) -> None:
        if self._in_comprehension(name):
            return
        # A class body's names are invisible to its comprehensions (Python's scoping rule).
        local = name in self.local and not (self.is_class and self.comprehensions)
        if name in self.declared_global or not (local or name in self.enclosing):
            self.ctx.read_later(name)

    def _inner_enclosing(self) -> frozenset[str]:
        """What a function nested here sees as closures: class-body names are not among them."""
        visible = self.enclosing if self.is_class else self.enclosing | self.local
        return visible.union(*self.comprehensions)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._load(node.id)
        elif node.id in self.declared_global and not self._in_comprehension(node.id):
            if isinstance(node.ctx, ast.Store):
                self.ctx.writes.setdefault(node.id)
            else:
                self.ctx.read_later(node.id)  # `del x` of a global needs x to exist
                self.ctx.unbind(node.id)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self._load(node.target.id)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None or not isinstance(node.target, ast.Name):
            self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.run([*getattr(node, "decorator_list", []), *defaults(node.args)])
        analyze_function(self.ctx, node, self._inner_enclosing())

    visit_AsyncFunctionDef = visit_Lambda = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.run([*node.decorator_list, *node.bases, *node.keywords])
        bindings = Bindings.of(node.body)
        scope = FunctionScope(self.ctx, bindings.local_names(), self._inner_enclosing(), bindings.globals, True)
        scope.run(node.body)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        first, *rest = node.generators
        self.visit(first.iter)  # evaluated in this scope, outside the comprehension
        self.comprehensions.append(
            {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        )
        self.run([first.target, *first.ifs, *rest])
        self.run([node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt])
        self.comprehensions.pop()

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension


def analyze_function(
    ctx: Context, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda, enclosing: frozenset[str]
) -> None:
    """Report the module-scope names a def/lambda body (and what nests in it) uses or declares global."""
    body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
    bindings = Bindings.of(body)
    args = node.args
    params = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg) if a]
    FunctionScope(ctx, bindings.local_names(params), enclosing, bindings.globals, False).run(body)
