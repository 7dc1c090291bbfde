"""The kernel/worker split, enforced: what runs remotely imports only what a bare worker has.

Everything under mini_magic/worker/ runs in a worker process or a Modal container, where IPython, ipykernel and
jupyter may be missing and start-up time matters. The rule: a module there imports only

- the standard library and cloudpickle;
- other modules of mini_magic.worker;
- the contract both sides share (:data:`SHARED`): wire and the picklers it uses, channel and its shared_frames, scrub, proctree,
  library_settings, placeholder, and figure_formats (stdlib-only at import; used in the worker only once IPython's
  shell exists).

The one exception is IPython itself where it is optional: :data:`LAZY_OPTIONAL` lists exactly the imports allowed,
each inside a function, whose caller falls back when it raises ImportError (the display bridge, IPython's SList).
The static check reads every file with ``ast`` (imports inside functions included); the dynamic one imports the
worker's modules with IPython, ipykernel and jupyter made unimportable and looks at ``sys.modules``, and starts the
display bridge there to show the fallback works.

The local pool and the kernel's process handle (mini_magic/backends/local/pool.py, process.py, runtime_dir.py)
follow the same rule (plus ``owner``), so that a worker can one day fan out through a pool of its own.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import mini_magic

PACKAGE = Path(mini_magic.__file__).parent
WORKER = PACKAGE / "worker"
POOL_MODULES = ("pool.py", "process.py", "runtime_dir.py")

SHARED = frozenset({
    "mini_magic",  # the package's __init__: lazy, imports nothing heavy
    "mini_magic.wire", "mini_magic.pickler", "mini_magic.namespace_pickling",
    "mini_magic.channel", "mini_magic.shared_frames", "mini_magic.scrub", "mini_magic.proctree", "mini_magic.library_settings",
    "mini_magic.placeholder", "mini_magic.figure_formats",
})
POOL_EXTRA = frozenset({"mini_magic.owner", "mini_magic.backends.local.process", "mini_magic.backends.local.runtime_dir",
                        "mini_magic.backends.local.backend"})  # backend: a TYPE_CHECKING import only (see below)
THIRD_PARTY = frozenset({"cloudpickle"})

# (file, function it sits in, module imported): IPython where the worker has it, each behind an ImportError fallback.
LAZY_OPTIONAL = frozenset({
    ("display.py", "_ipython_shell", "IPython.core.displaypub"),
    ("display.py", "_ipython_shell", "IPython.display"),
    ("display.py", "display", "IPython.display"),  # only once the shell exists (then IPython is there)
    ("display.py", "_ipython_shell", "IPython.core.interactiveshell"),
    ("display.py", "_ipython_shell", "traitlets"),
    ("display.py", "_ipython_shell", "traitlets.config"),
    ("shell.py", "_slist", "IPython.utils.text"),
})
BLOCKED = ("IPython", "ipykernel", "jupyter_client", "jupyter_core", "traitlets", "ipywidgets", "tqdm", "comm",
           "zmq", "tornado")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str | None, str, bool]]:
    """(enclosing function or None, absolute module name, under ``if TYPE_CHECKING``) for each import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    inside = path.is_relative_to(PACKAGE)
    package = "" if not inside else module_name(path) if path.name == "__init__.py" else \
        module_name(path).rpartition(".")[0]
    found: list[tuple[str | None, str, bool]] = []

    def visit(node: ast.AST, function: str | None, type_checking: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            type_checking = True
        if isinstance(node, ast.Import):
            found.extend((function, alias.name, type_checking) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if node.level and not node.module:  # ``from . import x``: x is a module
                found.extend((function, f"{target}.{alias.name}", type_checking) for alias in node.names)
            else:
                found.append((function, target, type_checking))
        for child in ast.iter_child_nodes(node):
            visit(child, function, type_checking)

    visit(tree, None, False)
    return found


def is_allowed(name: str, extra: frozenset[str] = frozenset()) -> bool:
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in THIRD_PARTY or top == "__future__":
        return True
    return name in SHARED or name in extra or name == "mini_magic.worker" or name.startswith("mini_magic.worker.")


def test_worker_modules_import_only_the_stdlib_cloudpickle_the_worker_and_the_shared_contract() -> None:
    offending, lazy_seen = [], set()
    files = sorted(WORKER.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "__main__.py", "runner.py", "bootstrap.py", "modal.py"}
    for path in files:
        for function, name, _ in imports(path):
            if is_allowed(name):
                continue
            if (path.name, function, name) in LAZY_OPTIONAL:
                lazy_seen.add((path.name, function, name))
                continue
            offending.append(f"{path.name}: {name}" + (f" (in {function})" if function else ""))
    assert offending == [], "worker modules import what a bare worker may not have: " + ", ".join(offending)
    assert lazy_seen == LAZY_OPTIONAL, f"stale allowance: {sorted(LAZY_OPTIONAL - lazy_seen)}"


def test_the_local_pool_and_process_handle_follow_the_worker_rule() -> None:
    offending = []
    for path in (PACKAGE / "backends" / "local" / name for name in POOL_MODULES):
        for function, name, type_checking in imports(path):
            if name == "mini_magic.backends.local.backend" and not type_checking:
                offending.append(f"{path.name}: {name} (outside TYPE_CHECKING)")
            elif not is_allowed(name, POOL_EXTRA):
                offending.append(f"{path.name}: {name}")
    assert offending == [], ", ".join(offending)


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The static check is not vacuous: an IPython import, even inside a function, is found and refused."""
    found = {name for _, name, _ in imports(WORKER / "runner.py")}
    assert "mini_magic.worker.context" in found and "mini_magic.wire" in found  # relative imports resolved
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from IPython.display import display\n")
    assert [(f, n) for f, n, _ in imports(sample)] == [("f", "IPython.display")]
    assert not is_allowed("IPython.display") and not is_allowed("mini_magic.execution")


DYNAMIC = r"""
import builtins, importlib.abc, json, pkgutil, sys

BLOCKED = set(json.loads(sys.argv[1]))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in BLOCKED:
            raise ImportError(f'{name} is blocked in this test')
        return None

sys.meta_path.insert(0, Block())
before = set(sys.modules)
import mini_magic.worker
for info in pkgutil.iter_modules(mini_magic.worker.__path__):
    importlib_name = 'mini_magic.worker.' + info.name
    __import__(importlib_name)
from mini_magic.worker import display
bridge = display.install(lambda *a, **k: None, lambda: None)  # IPython missing: the fallback display
from mini_magic.worker.shell import _slist
fallback = type(_slist(['a'])).__module__
print(json.dumps({'new': sorted(set(sys.modules) - before), 'shell': bridge.shell is None,
                  'display': builtins.display == bridge.fallback_display, 'slist': fallback}))
"""


def test_the_worker_imports_and_starts_its_display_bridge_without_ipython() -> None:
    out = subprocess.run([sys.executable, "-c", DYNAMIC, json.dumps(BLOCKED)], capture_output=True, text=True,
                         check=True).stdout
    result = json.loads(out)
    assert result["shell"] and result["display"], result
    assert result["slist"] == "mini_magic.worker.shell", result
    outside = [m for m in result["new"] if not is_allowed(m) and not m.startswith("_")
               and m.partition(".")[0] not in ("_distutils_hack",)]
    assert outside == [], outside
    assert "mini_magic.worker.runner" in result["new"] and "mini_magic.worker.modal" in result["new"]
