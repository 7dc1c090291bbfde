"""Pickling that keeps values tied to the namespace they live in, so a cell behaves the same wherever it ran.

Three rules, used by :class:`mini_magic.wire.Pickler` in both directions:

* **Notebook functions** (a ``def``/``lambda`` whose globals are the sending side's namespace: the notebook's, or
  the worker's run namespace) are rebuilt with the *receiving* side's namespace as their globals. A function that a
  ``%%thither`` cell defined then reads the notebook's ``y`` when called in the notebook, as if the cell had run
  there; a notebook function shipped to the worker reads the run's names. Going out, the globals it reads travel
  with it (``ship_globals``) and are added to the run's namespace where the cell did not bind them; coming back
  they do not (they are the notebook's own names).
* **Known objects**: an object the receiver sent and that did not change comes back as a reference to the
  receiver's own object (a persistent id, resolved by :func:`known_object`), so ``B = A`` keeps ``B is A`` and a
  later mutation through ``B`` changes ``A``.
* **Library classes and functions** travel by reference even when the sender has not imported their module
  under the name they carry (``numpy.recarray.__module__`` is ``numpy.rec``, imported lazily): a by-value copy of
  a library class breaks ``isinstance`` and ``super()``.

The receiving side's namespace and known objects are set per thread with :func:`receiving` while unpickling.
Standard library only: this module runs in the worker.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import sys
import threading
import types
import weakref
from collections.abc import Iterator
from typing import Any


class _Receiver(threading.local):
    home: dict[str, Any] | None = None
    known: dict[str, Any] | None = None


_RECEIVER = _Receiver()


@contextlib.contextmanager
def receiving(home: dict[str, Any] | None = None, known: dict[str, Any] | None = None) -> Iterator[None]:
    """While unpickling: notebook functions get ``home`` as globals; ``known`` maps names to the objects that
    references sent back (see :func:`reference`) stand for."""
    saved = _RECEIVER.home, _RECEIVER.known
    _RECEIVER.home, _RECEIVER.known = home, known
    try:
        yield
    finally:
        _RECEIVER.home, _RECEIVER.known = saved


class _EmptyCell:
    """Stands for a closure cell with no value yet (a recursive inner function before its ``def`` ran)."""

    def __reduce__(self) -> str:
        return "EMPTY_CELL"


EMPTY_CELL = _EmptyCell()


def reduce_notebook_function(func: types.FunctionType, home: dict[str, Any], ship_globals: bool) -> tuple:
    """The reduce value of a function whose globals are ``home``; its state is set after it is memoized, so a
    function that refers to itself (recursion through a closure or a global) pickles."""
    code = func.__code__
    state = {
        "defaults": func.__defaults__,
        "kwdefaults": func.__kwdefaults__,
        "qualname": func.__qualname__,
        "module": func.__module__,
        "doc": func.__doc__,
        "annotations": _annotations(func),
        "dict": func.__dict__,
        "closure": tuple(_cell_value(cell) for cell in func.__closure__ or ()),
        "globals": {name: home[name] for name in global_names(code) if name in home} if ship_globals else {},
    }
    return (notebook_function, (code, func.__name__), state, None, None, set_function_state)


def _annotations(func: types.FunctionType) -> dict[str, Any]:
    try:
        return func.__annotations__
    except Exception:  # noqa: BLE001 - lazily evaluated annotations (PEP 649) may not evaluate
        return {}


def _cell_value(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:
        return EMPTY_CELL


def notebook_function(code: types.CodeType, name: str) -> types.FunctionType:
    """Rebuilds a notebook function on the receiving side, in its namespace (a fresh one when unpickled outside
    :func:`receiving`, as a plain by-value function would be)."""
    home = _RECEIVER.home
    if home is None:
        home = {"__name__": "__main__", "__builtins__": builtins}
    cells = tuple(types.CellType() for _ in code.co_freevars) or None
    return types.FunctionType(code, home, name, None, cells)


def set_function_state(func: types.FunctionType, state: dict[str, Any]) -> None:
    for cell, value in zip(func.__closure__ or (), state["closure"]):
        if value is not EMPTY_CELL:
            cell.cell_contents = value
    for name, value in state["globals"].items():
        func.__globals__.setdefault(name, value)  # the run's own binding of a name wins
    func.__defaults__ = state["defaults"]
    func.__kwdefaults__ = state["kwdefaults"]
    func.__qualname__ = state["qualname"]
    func.__module__ = state["module"]
    func.__doc__ = state["doc"]
    func.__dict__.update(state["dict"])
    func.__annotations__ = state["annotations"]


_GLOBAL_NAMES: weakref.WeakKeyDictionary[types.CodeType, frozenset[str]] = weakref.WeakKeyDictionary()


def global_names(code: types.CodeType) -> frozenset[str]:
    """Names a function's code (nested code included) may look up as globals; attribute names are among them, and
    only those present in the namespace are shipped."""
    names = _GLOBAL_NAMES.get(code)
    if names is None:
        found = set(code.co_names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                found |= global_names(const)
        names = _GLOBAL_NAMES[code] = frozenset(found - {"__builtins__"})
    return names


def known_object(name: str) -> Any:
    """What a reference to the receiver's own object unpickles to."""
    known = _RECEIVER.known
    if known is None or name not in known:
        raise LookupError(f"a value referred to the input {name!r}, which this side did not send")
    return known[name]


def import_attribute(module: str, qualname: str) -> Any:
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def reduce_by_reference(obj: Any) -> tuple | None:
    """A class or function whose module is not imported under the name it carries, but which is importable from
    there because its package is loaded: the reduce value that imports it on the other side. None otherwise."""
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str) or module in sys.modules or module.partition(".")[0] not in sys.modules:
        return None
    qualname = getattr(obj, "__qualname__", "")
    if not qualname or "<" in qualname:
        return None
    try:
        found = import_attribute(module, qualname)
    except Exception:  # noqa: BLE001 - not importable under that name: let it travel by value
        return None
    return (import_attribute, (module, qualname)) if found is obj else None
