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

* **Classes with ``__slots__``** defined in the notebook keep their slots (cloudpickle rebuilds a class by value
  without them: its instances would get a ``__dict__`` and no longer pickle back).
* **Views stay views** of an array that travels in the same message (or is the receiver's own): ``v = a[:2]``
  still shares ``a``'s memory on the other side. **Cached functions** (``functools.lru_cache``/``cache``) of the
  notebook travel as their function and cache settings (their cache stays behind).

The receiving side's namespace and known objects are set per thread with :func:`receiving` while unpickling.
Standard library only: this module runs in the worker.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import dis
import functools
import importlib
import sys
import threading
import types
import weakref
from collections.abc import Iterable, Iterator
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


_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME", "STORE_NAME", "DELETE_NAME"})


def global_names(code: types.CodeType) -> frozenset[str]:
    """Names a function's code (nested code and class bodies included) looks up as globals: the names of its global
    loads and stores, not every name in ``co_names`` (which also holds attribute names: ``x.stream()`` must not
    ship a notebook variable called ``stream``). Only those present in the namespace are shipped."""
    names = _GLOBAL_NAMES.get(code)
    if names is None:
        found = {ins.argval for ins in dis.get_instructions(code) if ins.opname in _GLOBAL_OPS}
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


def updated_object(name: str, new: Any) -> Any:
    """An input the run changed in place: the receiver's own object, changed the same way when its kind allows
    (so every other name holding it sees the change, as after a normal cell), else ``new``."""
    known = _RECEIVER.known
    local = known.get(name, _MISSING) if known is not None else _MISSING
    if local is _MISSING:
        return new
    try:
        return local if update_in_place(local, new) else new
    except Exception:  # noqa: BLE001 - an object that refuses the update is replaced instead
        return new


_MISSING = object()


def update_in_place(local: Any, new: Any) -> bool:
    """Make ``local`` hold what ``new`` holds, for the kinds where that is well defined: numpy arrays of the same
    shape and dtype (views included: the write reaches their base), lists, dicts, sets, bytearrays (and their
    subclasses, attributes too), and objects whose pickling is the default one (state in ``__dict__``, set with
    their own ``__setstate__`` if they have one). False: the caller rebinds the name to ``new`` instead."""
    kind = type(local)
    if new is local:
        return True
    if kind is not type(new):
        return False
    if kind is types.FunctionType:
        return _update_function(local, new)
    np = sys.modules.get("numpy")
    if np is not None and kind is np.ndarray:
        if local.shape != new.shape or local.dtype != new.dtype or not local.flags.writeable:
            return False
        np.copyto(local, new)
        return True
    if isinstance(local, (list, bytearray)):
        local[:] = new
    elif isinstance(local, dict):
        local.clear()
        local.update(new)
    elif isinstance(local, set):
        local.clear()
        local.update(new)
    elif kind.__reduce_ex__ is not object.__reduce_ex__ or kind.__reduce__ is not object.__reduce__:
        return False
    if hasattr(kind, "__slots__") or not hasattr(local, "__dict__"):
        return isinstance(local, (list, bytearray, dict, set)) and not hasattr(kind, "__slots__")
    setstate = getattr(kind, "__setstate__", None)
    if setstate is not None and setstate is not getattr(object, "__setstate__", None):
        getstate = getattr(new, "__getstate__", None)
        setstate(local, getstate() if getstate is not None else new.__dict__)
    else:
        local.__dict__.clear()
        local.__dict__.update(new.__dict__)
    return True


def _update_function(local: types.FunctionType, new: types.FunctionType) -> bool:
    """A function changed in place: what its closure cells hold (``nonlocal`` state), its defaults, attributes."""
    if local.__code__ != new.__code__:
        return False
    for mine, theirs in zip(local.__closure__ or (), new.__closure__ or ()):
        value = _cell_value(theirs)
        if value is not EMPTY_CELL:
            mine.cell_contents = value
    local.__defaults__, local.__kwdefaults__ = new.__defaults__, new.__kwdefaults__
    local.__dict__.update(new.__dict__)
    return True


def shallow_copy(obj: Any) -> Any:
    """A new object holding what ``obj`` holds, to carry its new state by value (None when there is none: a
    type, a module, an object copy gives back as itself). A function gets new closure cells with the same
    contents."""
    if type(obj) is types.FunctionType:
        cells = tuple(types.CellType(v) if v is not EMPTY_CELL else types.CellType()
                      for v in map(_cell_value, obj.__closure__ or ())) or None
        clone = types.FunctionType(obj.__code__, obj.__globals__, obj.__name__, obj.__defaults__, cells)
        clone.__kwdefaults__, clone.__qualname__, clone.__module__ = obj.__kwdefaults__, obj.__qualname__, obj.__module__
        clone.__dict__.update(obj.__dict__)
        return clone
    duplicate = copy.copy(obj)
    return None if duplicate is obj else duplicate


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


_CACHED_FUNCTION = type(functools.lru_cache(maxsize=None)(lambda: None))


def reduce_cached_function(obj: Any) -> tuple | None:
    """A notebook function under ``functools.lru_cache``: the wrapper pickles by a ``__main__`` attribute lookup,
    which finds nothing on the other side, so it travels as the function and its cache settings."""
    if type(obj) is not _CACHED_FUNCTION:
        return None
    wrapped = getattr(obj, "__wrapped__", None)
    if getattr(wrapped, "__module__", None) != "__main__":
        return None
    parameters = obj.cache_parameters()
    return (cached_function, (wrapped, parameters["maxsize"], parameters["typed"]))


def cached_function(wrapped: Any, maxsize: int | None, typed: bool) -> Any:
    return functools.lru_cache(maxsize=maxsize, typed=typed)(wrapped)


class ArrayBases:
    """The arrays a numpy view may be rebuilt against: the receiver's own arrays (known or changed inputs) first,
    then the values of the message. Per block of memory one of them is THE base, the largest (the first of equals),
    and only it is never sent as a view itself, so two views of one block never refer to each other (a cycle).
    Only a C- or F-contiguous array can be the base: a view is rebuilt as a window into it."""

    def __init__(self, arrays: Iterable[Any]) -> None:
        self._base: dict[int, Any] = {}
        for array in arrays:
            if not (array.flags.c_contiguous or array.flags.f_contiguous):
                continue
            owner = id(_memory_owner(array))
            current = self._base.get(owner)
            if current is None or array.nbytes > current.nbytes:
                self._base[owner] = array

    def find(self, view: Any) -> tuple[Any, int] | None:
        """The base array whose memory holds all of ``view``'s, and the view's byte offset into it."""
        base = self._base.get(id(_memory_owner(view)))
        if base is None or base is view:
            return None
        low, high = _byte_bounds(view)
        start = base.__array_interface__["data"][0]
        if start <= low and high <= start + base.nbytes:
            return base, view.__array_interface__["data"][0] - start
        return None


def _memory_owner(array: Any) -> Any:
    while type(array.base).__name__ == "ndarray" or isinstance(array.base, type(array)):
        array = array.base
    return array


def _byte_bounds(array: Any) -> tuple[int, int]:
    start = array.__array_interface__["data"][0]
    if array.size == 0:
        return start, start
    low = high = start
    for extent, stride in zip(array.shape, array.strides):
        reach = stride * (extent - 1)
        low, high = (low + reach, high) if reach < 0 else (low, high + reach)
    return low, high + array.itemsize


def reduce_array_view(array: Any, bases: ArrayBases) -> tuple | None:
    """A plain numpy array that is a view into one of ``bases``: rebuilt as a view of that base on the other side,
    so writes through one show in the other as they do here."""
    np = sys.modules.get("numpy")
    if np is None or type(array) is not np.ndarray or array.base is None:
        return None
    found = bases.find(array)
    if found is None:
        return None
    base, offset = found
    return (array_view, (base, offset, array.shape, array.strides, array.dtype, array.flags.writeable))


def array_view(base: Any, offset: int, shape: tuple, strides: tuple, dtype: Any, writeable: bool) -> Any:
    np = importlib.import_module("numpy")
    view = np.ndarray(shape, dtype, buffer=base, offset=offset, strides=strides)
    if not writeable:
        view.flags.writeable = False
    return view


def reduce_slotted_class(cls: Any) -> tuple | None:
    """A notebook class with ``__slots__``: rebuilt with its slots (they must exist when the class is created), its
    other attributes (methods included) set after it is memoized, so they may refer to the class."""
    if type(cls) is not type or cls.__module__ != "__main__" or "__slots__" not in vars(cls):
        return None
    slots = vars(cls)["__slots__"]
    slots = (slots,) if isinstance(slots, str) else tuple(slots)
    skip = {"__dict__", "__weakref__", "__slots__", "__qualname__", *slots}
    attributes = {k: v for k, v in vars(cls).items() if k not in skip}
    return (slotted_class, (cls.__name__, cls.__bases__, slots, cls.__qualname__), attributes, None, None,
            set_class_attributes)


def slotted_class(name: str, bases: tuple, slots: tuple[str, ...], qualname: str) -> type:
    return type(name, bases, {"__slots__": slots, "__qualname__": qualname})


def set_class_attributes(cls: type, attributes: dict[str, Any]) -> None:
    for name, value in attributes.items():
        setattr(cls, name, value)
