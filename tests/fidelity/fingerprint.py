"""Runs INSIDE each kernel (loaded by kernel_pair.py): a JSON digest of the user namespace after a cell.

Two namespaces match when every user name has the same digest on both sides. A digest describes a value without
calling user code beyond ``repr`` of builtins and the libraries' own accessors (shape, dtype, bytes), so taking it
never changes what it describes. Memory addresses are blanked, because the same program puts the same object at
another address in another process.

Relations between names are part of the digest: which other names are bound to the same object (``B = A``),
which numpy arrays share memory (a view and its base), whether a function's globals are the notebook's namespace,
and whether an instance's class is the class bound to that name in the notebook (``isinstance`` depends on it).

Standard library only: numpy, pandas and matplotlib are looked up in sys.modules, never imported here.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import types
from typing import Any

SKIPPED = {"In", "Out", "exit", "quit", "get_ipython"}
SCALARS = (type(None), bool, int, float, complex, str, bytes)
IMMUTABLE = SCALARS + (tuple, frozenset, range, types.ModuleType)  # identity of these is an interpreter detail
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
MAX_TEXT = 160
VOLATILE = re.compile(r"(^|_)time(_|$)")  # measured durations (sklearn's refit_time_, cv_results_'s mean_fit_time)
MAX_ITEMS = 50


def fingerprint(user_ns: dict[str, Any]) -> str:
    names = sorted(n for n in user_ns if not n.startswith("_") and n not in SKIPPED)
    values = {n: user_ns[n] for n in names}
    digests = {}
    for name, value in values.items():
        try:
            digests[name] = describe(value, user_ns)
        except Exception as exc:  # a value whose accessors raise is described by that, on both sides alike
            digests[name] = {"type": _type_name(value), "unreadable": type(exc).__name__}
    for name, peers in _same_objects(values).items():
        digests[name]["same_object_as"] = peers
    for name, peers in _shared_memory(values).items():
        digests[name]["shares_memory_with"] = peers
    return json.dumps(digests, sort_keys=True, default=str)


def describe(value: Any, user_ns: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    kind = _type_name(value)
    out: dict[str, Any] = {"type": kind}
    if isinstance(value, types.ModuleType):
        # mini_magic may bind a lazy stand-in (a ModuleType subclass that imports on first use) for a module a
        # %%thither cell imported: to the notebook it is the module of that name.
        out["type"] = "module"
        out["module"] = value.__name__
    elif isinstance(value, SCALARS):
        out["value"] = _text(repr(value))
    elif isinstance(value, (list, tuple, set, frozenset, dict)) and type(value).__module__ == "builtins":
        out["items"] = _container(value, user_ns, depth)
    elif _is(value, "numpy", "ndarray"):
        out.update(_array(value))
    elif _is(value, "numpy", "generic"):
        out["value"] = _text(repr(value))
    elif _pandas_kind(value):
        out.update(_pandas(value))
    elif _is(value, "matplotlib.figure", "Figure"):
        out["axes"] = [_axes(ax) for ax in value.get_axes()]
    elif _is(value, "matplotlib.axes", "Axes"):
        out["axes"] = _axes(value)
    elif _is(value, "matplotlib.artist", "Artist"):
        out.update(_artist(value))
    elif isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        out.update(_function(value, user_ns))
    elif isinstance(value, type):
        out.update(_class(value, user_ns))
    else:
        out.update(_instance(value, user_ns, depth))
    return out


def _type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _text(text: str) -> str:
    text = ADDRESS.sub("0x…", text)
    if len(text) <= MAX_TEXT:
        return text
    return f"{text[:MAX_TEXT]}… sha1:{hashlib.sha1(text.encode()).hexdigest()[:12]} len:{len(text)}"


def _is(value: Any, module: str, name: str) -> bool:
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return isinstance(cls, type) and isinstance(value, cls)


def _container(value: Any, user_ns: dict[str, Any], depth: int) -> Any:
    if depth >= 3:
        return _text(repr(value))
    if isinstance(value, dict):
        items = [[_text(repr(k)), _volatile(v) if isinstance(k, str) and VOLATILE.search(k)
                  else describe(v, user_ns, depth + 1)] for k, v in list(value.items())[:MAX_ITEMS]]
    else:
        items = [describe(v, user_ns, depth + 1) for v in list(value)[:MAX_ITEMS]]
        if isinstance(value, (set, frozenset)):
            items.sort(key=lambda d: json.dumps(d, sort_keys=True, default=str))
    return {"len": len(value), "first": items}


def _array(value: Any) -> dict[str, Any]:
    out = {"shape": list(value.shape), "dtype": str(value.dtype)}
    if value.dtype.hasobject:
        out["repr"] = _text(repr(value))
    else:
        out["sha1"] = hashlib.sha1(value.tobytes()).hexdigest()[:16]
    return out


def _pandas_kind(value: Any) -> str | None:
    for name in ("DataFrame", "Series", "Index"):
        if _is(value, "pandas", name):
            return name
    return None


def _pandas(value: Any) -> dict[str, Any]:
    pd = sys.modules["pandas"]
    out: dict[str, Any] = {"shape": list(value.shape)}
    if hasattr(value, "dtypes"):
        dtypes = value.dtypes
        out["dtypes"] = [str(d) for d in dtypes] if hasattr(dtypes, "__iter__") else str(dtypes)
    if _is(value, "pandas", "DataFrame"):
        out["columns"] = _text(repr(list(value.columns)))
    if not _is(value, "pandas", "Index"):
        out["index"] = _text(repr(value.index))
    try:
        out["sha1"] = hashlib.sha1(pd.util.hash_pandas_object(value, index=True).values.tobytes()).hexdigest()[:16]
    except TypeError:  # unhashable cells (lists in a column): the text form is the digest
        out["repr"] = _text(repr(value))
    return out


def _axes(ax: Any) -> dict[str, Any]:
    return {"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
            "lines": len(ax.get_lines()), "patches": len(ax.patches), "collections": len(ax.collections)}


def _artist(artist: Any) -> dict[str, Any]:
    out = {"label": artist.get_label(), "visible": artist.get_visible()}
    for getter in ("get_color", "get_text", "get_xydata"):
        if hasattr(artist, getter):
            out[getter[4:]] = _text(repr(getattr(artist, getter)()))
    return out


def _function(value: Any, user_ns: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"qualname": getattr(value, "__qualname__", None),
                           "module": getattr(value, "__module__", None)}
    code = getattr(value, "__code__", None)
    if code is not None:
        out["args"] = list(code.co_varnames[:code.co_argcount + code.co_kwonlyargcount])
        out["defaults"] = _text(repr(getattr(value, "__defaults__", None)))
        out["closure"] = [_text(repr(_cell_value(c))) for c in (value.__closure__ or ())]
        out["globals_are_notebook"] = value.__globals__ is user_ns
    wrapped = getattr(value, "__wrapped__", None)
    if wrapped is not None:
        out["wraps"] = getattr(wrapped, "__qualname__", None)
    return out


def _cell_value(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:
        return "<empty cell>"


def _class(value: type, user_ns: dict[str, Any]) -> dict[str, Any]:
    return {"qualname": value.__qualname__, "module": value.__module__,
            "bases": [b.__qualname__ for b in value.__bases__],
            "attributes": sorted(k for k in vars(value) if not k.startswith("__")),
            "bound_here": user_ns.get(value.__name__) is value}


def _instance(value: Any, user_ns: dict[str, Any], depth: int) -> dict[str, Any]:
    cls = type(value)
    out: dict[str, Any] = {}
    if cls.__module__ == "__main__":
        bound = user_ns.get(cls.__name__)
        out["class_is_notebook_class"] = "absent" if bound is None else bound is cls
    state = getattr(value, "__dict__", None)
    if cls.__module__ != "__main__" and isinstance(state, dict):
        # A library object's private attributes are caches, callback counters and id-keyed registries that differ
        # between two processes running the same code; its public attributes are its state (sklearn's coef_).
        state = {k: v for k, v in state.items() if not k.startswith("_")}
    if isinstance(state, dict) and state and depth < 3:
        out["state"] = {k: _volatile(v) if VOLATILE.search(k) else describe(v, user_ns, depth + 1)
                        for k, v in sorted(state.items())[:MAX_ITEMS]}
    else:
        out["repr"] = _text(repr(value))
    return out


def _volatile(value: Any) -> dict[str, Any]:
    return {"type": _type_name(value), "volatile": True}


def _same_objects(values: dict[str, Any]) -> dict[str, list[str]]:
    by_id: dict[int, list[str]] = {}
    for name, value in values.items():
        if not isinstance(value, IMMUTABLE):
            by_id.setdefault(id(value), []).append(name)
    return {name: [p for p in group if p != name] for group in by_id.values() if len(group) > 1 for name in group}


def _shared_memory(values: dict[str, Any]) -> dict[str, list[str]]:
    np = sys.modules.get("numpy")
    if np is None:
        return {}
    arrays = {n: v for n, v in values.items() if isinstance(v, np.ndarray) and v.size}
    peers: dict[str, list[str]] = {}
    names = sorted(arrays)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if arrays[a] is not arrays[b] and np.shares_memory(arrays[a], arrays[b]):
                peers.setdefault(a, []).append(b)
                peers.setdefault(b, []).append(a)
    return peers
