"""Kernel side: a module a ``%%thither`` cell bound (``import torch``) comes back without being imported here.

A module travels by name (``wire.ModuleRef``). Importing it in the kernel as the result arrives would run its import
a second time, here: ``import this`` prints the Zen twice, ``import torch`` on a GPU backend costs the kernel seconds
(or fails where torch exists only remotely). So a module the kernel has already imported is assigned as it is, and
any other becomes a :class:`ReturnedModule` that imports it on first use: the first attribute read (or write,
``dir()``, ``vars()``) imports it, rebinds the notebook names that hold the stand-in to the real module, and forwards
from then on. Where the module is not installed here, that first use raises a ModuleNotFoundError that says so.

What does not import: the assignment, ``repr()``, ``isinstance(m, types.ModuleType)``, ``m.__name__``, IPython's
display probes (``_repr_*_``, ``_ipython_*``) and passing the stand-in to a later ``%%thither`` cell (it travels by
name again, also inside a function's globals).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from . import library_settings, wire

_REAL = "_mini_magic_real_module"
# Read from the stand-in itself while the module is not imported: the name is exact; ``__package__`` is None (read
# by cloudpickle when the stand-in is a global of a shipped function, which must not import it).
_OWN = frozenset({"__class__", "__name__", "__reduce__", "__reduce_ex__"})
_OWN_UNTIL_IMPORTED = frozenset({"__package__"})
_PROBES = ("_repr_", "_ipython_")


def rebuild(value: Any) -> Any:
    """``value`` itself unless it is a ModuleRef: then the kernel's module when imported, else a stand-in."""
    if not isinstance(value, wire.ModuleRef):
        return value
    module = sys.modules.get(value.name)
    if isinstance(module, types.ModuleType):
        return module
    return ReturnedModule(value.name)


class ReturnedModule(types.ModuleType):
    """A module the worker imported and the kernel has not: imported here on first use (see the module docstring)."""

    def __getattribute__(self, attr: str) -> Any:
        if attr in _OWN:
            return super().__getattribute__(attr)
        real = _state(self).get(_REAL)
        if real is None:
            if attr.startswith(_PROBES):
                raise AttributeError(attr)  # IPython asking how to display it: as itself, without importing
            if attr in _OWN_UNTIL_IMPORTED:
                return super().__getattribute__(attr)
            real = _import(self)
        return getattr(real, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(_import(self), attr, value)

    def __delattr__(self, attr: str) -> None:
        delattr(_import(self), attr)

    def __dir__(self) -> list[str]:
        return dir(_import(self))

    def __repr__(self) -> str:
        real = _state(self).get(_REAL)
        if real is not None:
            return repr(real)
        return f"<module {_state(self)['__name__']!r} (imported by a %%thither cell; imported here on first use)>"

    def __reduce__(self) -> tuple[Any, ...]:
        """By name, like any module: the other side imports it (a plain module's pickling would import it here)."""
        return (importlib.import_module, (_state(self)["__name__"],))

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return self.__reduce__()


def _state(stand_in: ReturnedModule) -> dict[str, Any]:
    """The stand-in's own dict (its ``__dict__`` attribute is the real module's)."""
    return types.ModuleType.__getattribute__(stand_in, "__dict__")  # type: ignore[no-any-return]


def _import(stand_in: ReturnedModule) -> types.ModuleType:
    state = _state(stand_in)
    real = state.get(_REAL)
    if real is not None:
        return real  # type: ignore[no-any-return]
    name = state["__name__"]
    try:
        real = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
            raise  # the module is here, something it imports is missing: that error is the useful one
        raise ModuleNotFoundError(
            f"No module named {name!r} in the kernel: a %%thither cell imported it in the worker and returned it, "
            "but it is not installed here. Install it in the kernel's environment to use it in normal cells, or "
            "use it only inside %%thither cells.",
            name=name,
        ) from None
    state[_REAL] = real
    _rebind_notebook_names(stand_in, real)
    library_settings.apply_pending()  # np.set_printoptions made in the worker holds here too
    return real


def _rebind_notebook_names(stand_in: ReturnedModule, real: types.ModuleType) -> None:
    """Notebook names that hold the stand-in get the module itself, so ``m is sys.modules[...]`` and
    ``importlib.reload(m)`` hold as after a normal import. Other references keep forwarding."""
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    ip = get_ipython() if callable(get_ipython) else None
    namespace = getattr(ip, "user_ns", None)
    if not isinstance(namespace, dict):
        return
    for name in [n for n, v in list(namespace.items()) if v is stand_in]:
        namespace[name] = real
