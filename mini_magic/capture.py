"""Kernel side: turn a cell and the notebook namespace into a Job, refusing what cannot travel before anything runs.

What travels: the values of the names the cell reads (modules by name), the source of the notebook's local modules
the cell uses (so they import where the notebook's files do not exist), and the source lines of notebook cells that
defined shipped functions (so remote tracebacks show them).
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import linecache
import os
import socket
import sqlite3
import sys
import threading
import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import namespace_pickling, wire
from .closure import CellAnalysis
from .callbacks import Hither, HitherHandle
from .errors import CaptureError, ThitherUsageError
from .placeholder import NOT_SENT
from .worker.hither import HitherStub
from .worker.modules import is_local_path

# Names the kernel defines for itself that a cell must never ship (the worker has its own get_ipython).
_NEVER_CAPTURED = frozenset({"get_ipython", "exit", "quit", "__builtins__", "In", "Out", "_ih", "_oh", "_dh"})
_ALWAYS_REMOTE = frozenset({"mini_magic", "cloudpickle", "__main__", "builtins"})
MAX_SHIPPED_SOURCE = 20 * 1024 * 1024

class _RecordingPickler(wire.Pickler):
    """Notes the modules of classes and functions pickled by reference: those modules must import remotely."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.modules: set[str] = set()
        self.hithers: dict[str, Any] = {}
        self.globals: dict[str, Any] = {}  # notebook names shipped because a shipped notebook function reads them

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (Hither, HitherHandle)):
            # Local callbacks never travel: the worker gets a stub that knows only the reference id.
            self.hithers[obj.ref_id] = obj
            return (HitherStub, (obj.ref_id, obj.name))
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            module = getattr(obj, "__module__", None)
            if isinstance(module, str):
                self.modules.add(module)
        reduced = super().reducer_override(obj)
        if isinstance(reduced, tuple) and reduced[0] is namespace_pickling.notebook_function:
            self.globals.update(reduced[2]["globals"])
        return reduced


def closure_values(analysis: CellAnalysis, namespace: dict[str, Any], extra: Iterable[str] = (), *,
                   returned: Iterable[str] | None = None) -> dict[str, Any]:
    """The values the cell reads and the ``--in`` names (``extra``), in order; an absent read stays absent, an absent
    ``--in`` name is refused. A name the cell may unbind without reading it gets the placeholder (see
    mini_magic.placeholder), so that the notebook loses it exactly when a normal cell would; not a ``--out`` name
    (``returned``): those come back whatever they hold, and the placeholder must never come back."""
    missing = [name for name in extra if name not in namespace]
    if missing:
        names, verb = ", ".join(map(repr, missing)), "is" if len(missing) == 1 else "are"
        raise ThitherUsageError(f"%%thither --in: {names} {verb} not defined in the notebook; define it first or leave "
                                "it out of --in. Nothing ran and the notebook namespace is unchanged.")
    values: dict[str, Any] = {}
    for name in (*analysis.reads, *extra):
        if name in namespace and name not in _NEVER_CAPTURED and name not in values:
            value = namespace[name]
            values[name] = wire.ModuleRef(value.__name__) if isinstance(value, types.ModuleType) else value
    for name in analysis.unbinds:
        if name in namespace and name not in _NEVER_CAPTURED and name not in values and name not in (returned or ()):
            values[name] = NOT_SENT
    return values


@dataclass(frozen=True)
class PackedClosure:
    values: wire.PackedValues
    modules: set[str]  # modules the values need remotely (by reference)
    hithers: dict[str, Any]  # reference id -> Hither / HitherHandle found anywhere in the values
    sent: dict[str, Any]  # every value the worker gets under a name: the closure and the globals its functions read


def pack_closure(values: dict[str, Any], namespace: dict[str, Any] | None = None) -> PackedClosure:
    """Pack the closure; on failure raise CaptureError naming the variable, why, and what to do.

    Functions defined in ``namespace`` (the notebook's) travel as notebook functions: in the worker their globals
    are the run's namespace, where the notebook globals they read are added (mini_magic.namespace_pickling)."""
    picklers: list[_RecordingPickler] = []

    def factory(*args: Any, **kwargs: Any) -> _RecordingPickler:
        picklers.append(_RecordingPickler(*args, **kwargs))
        return picklers[-1]

    try:
        packed, _ = wire.pack_values(values, pickler_factory=factory, home=namespace, ship_globals=True)
    except wire.PackError as exc:
        reason, fix = explain_unpicklable(exc.value, exc.cause)
        raise CaptureError(exc.name, type(exc.value).__name__, reason, fix) from exc.cause
    pickler = picklers[-1] if picklers else None
    modules = set(pickler.modules) if pickler else set()
    modules.update(v.name for v in values.values() if isinstance(v, wire.ModuleRef))
    sent = {**(pickler.globals if pickler else {}), **values}
    return PackedClosure(packed, modules, dict(pickler.hithers) if pickler else {}, sent)


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()), threading.Condition, threading.Semaphore,
               threading.Event)
_GENERIC_FIX = (
    "Build it inside the cell from its configuration (send the config, not the object), or give its class "
    "__getstate__/__setstate__ that leave out the part that cannot be copied."
)


def explain_unpicklable(value: Any, cause: BaseException) -> tuple[str, str]:
    """A reason a person understands, and the fix, for a value pickle refused."""
    if isinstance(value, wire.OPEN_FILES):
        return ("an open file or stream belongs to this process", "Send its path (a str) and open it inside the cell.")
    if isinstance(value, _LOCK_TYPES):
        return ("a lock or other synchronisation object only works inside one process", "Create it inside the cell.")
    if isinstance(value, socket.socket):
        return ("an open network connection belongs to this process", "Connect inside the cell.")
    if isinstance(value, sqlite3.Connection):
        return ("an open database connection belongs to this process",
                "Send the database path and connect inside the cell.")
    if isinstance(value, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
        return ("a running generator or coroutine keeps its state in this process",
                "Turn it into a list first (xs = list(gen)) or create the generator inside the cell.")
    return (f"it holds something that cannot be pickled ({type(cause).__name__}: {cause})", _GENERIC_FIX)


def imported_modules(tree: ast.AST) -> set[str]:
    """Absolute module names a piece of code imports (``from . import x`` is left to the package shipping)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _local_spec(top: str, root: str) -> Any:
    if top in _ALWAYS_REMOTE or top in sys.builtin_module_names or top in sys.stdlib_module_names:
        return None
    try:
        # Under root first (the notebook's folder, an invoke's code_root, which need not be on sys.path here).
        spec = importlib.machinery.PathFinder.find_spec(top, [root]) or importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    path = locations[0] if locations else spec.origin
    if not path or not os.path.exists(path) or not is_local_path(path, root):
        return None
    return spec


def local_module_sources(module_names: Iterable[str], root: str) -> tuple[wire.ModuleSource, ...]:
    """The source of every local module (and package) among ``module_names``, and of local modules they import."""
    root = os.path.realpath(root)
    shipped: dict[str, wire.ModuleSource] = {}
    pending = {name.partition(".")[0] for name in module_names}
    seen: set[str] = set()
    total = 0
    while pending:
        top = pending.pop()
        if top in seen:
            continue
        seen.add(top)
        spec = _local_spec(top, root)
        if spec is None:
            continue
        for source in _read_module_files(top, spec):
            shipped[source.name] = source
            total += len(source.source)
            try:
                pending.update(n.partition(".")[0] for n in imported_modules(ast.parse(source.source)))
            except SyntaxError:
                pass  # the remote import will raise it with the file and line
    if total > MAX_SHIPPED_SOURCE:
        raise CaptureError(
            "local modules", "source", f"{total / 1e6:.0f} MB of local module source would be shipped with the cell",
            "Install large local packages in the worker environment instead (pip install -e .).",
        )
    return tuple(shipped.values())


def _read_module_files(top: str, spec: Any) -> Iterable[wire.ModuleSource]:
    if not spec.submodule_search_locations:
        with open(spec.origin, encoding="utf-8") as f:
            yield wire.ModuleSource(top, f.read(), False, spec.origin)
        return
    package_dir = list(spec.submodule_search_locations)[0]
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__pycache__"))]
        rel = os.path.relpath(dirpath, package_dir)
        parts = [top] + ([] if rel == "." else rel.split(os.sep))
        if "__init__.py" not in filenames and rel != ".":
            continue
        for filename in sorted(filenames):
            if not filename.endswith(".py"):
                continue
            path = os.path.join(dirpath, filename)
            is_package = filename == "__init__.py"
            name = ".".join(parts if is_package else [*parts, filename[:-3]])
            with open(path, encoding="utf-8") as f:
                yield wire.ModuleSource(name, f.read(), is_package, path)


def notebook_sources(values: Iterable[Any]) -> dict[str, str]:
    """Source text of the notebook cells that defined the shipped functions and classes (from linecache)."""
    files: set[str] = set()
    for value in values:
        members = list(vars(value).values()) if isinstance(value, type) else [value]
        for member in members:
            code = getattr(member, "__code__", None)
            if code is not None:
                files.add(code.co_filename)
    sources = {}
    for filename in files:
        if filename in linecache.cache and not os.path.exists(filename):
            sources[filename] = "".join(linecache.getlines(filename))
    return sources
