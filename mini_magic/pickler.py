"""The picklers of the wire format (mini_magic.wire): cloudpickle with the project's rules.

Open files are refused, code objects travel as marshal data (they keep their file name), and values stay tied to
their namespace (mini_magic.namespace_pickling): notebook functions, known and changed objects, numpy views,
library classes. Standard library and cloudpickle only: the worker imports it.
"""

from __future__ import annotations

import io
import marshal
import pickle
import types
from collections.abc import Iterable, Sequence
from typing import Any

import cloudpickle

from . import namespace_pickling


class Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple):  # ("update", name, new): an input changed in place; see Pickler
            return namespace_pickling.updated_object(pid[1], pid[2])
        return namespace_pickling.known_object(pid)  # an unchanged input: the receiver's own object


class CountingBuffers:
    """The out-of-band buffers of a stream, counting the bytes handed out (to size each value)."""

    def __init__(self, buffers: Sequence[Any]) -> None:
        self._buffers = iter(buffers)
        self.nbytes = 0

    def __iter__(self) -> CountingBuffers:
        return self

    def __next__(self) -> Any:
        buffer = next(self._buffers)
        self.nbytes += memoryview(buffer).nbytes
        return buffer


OPEN_FILES = (io.FileIO, io.BufferedReader, io.BufferedWriter, io.BufferedRandom, io.TextIOWrapper)


class Pickler(cloudpickle.Pickler):
    """cloudpickle, except that open files are refused, code objects keep the file name and lines they were
    compiled from, and values stay tied to their namespace (:mod:`mini_magic.namespace_pickling`): functions whose
    globals are ``home`` are rebuilt in the receiver's namespace (with the globals they read when
    ``ship_globals``), objects in ``known`` (id -> name) travel as references to the receiver's own objects, those
    in ``changed`` as in-place updates of them, numpy views of ``arrays`` (and of the values packed by name) stay
    views, and library classes travel by reference.

    A remote traceback finds the source of a notebook function through its code object's ``co_filename`` (the
    cell's ``<ipython-input-…>`` name, whose text travels in :attr:`Job.linecache`). How cloudpickle rebuilds a code
    object is its own business and changes between releases (3.1.3 renames every file to ``<dynamic-code>``), so code
    objects travel as :mod:`marshal` data instead: the ``.pyc`` format, which keeps every attribute, nested code
    included, and is stable within a Python minor version, the same minor version the job header requires on both
    sides.
    """

    def __init__(self, *args: Any, home: dict[str, Any] | None = None, ship_globals: bool = False,
                 known: dict[int, str] | None = None, changed: dict[int, str] | None = None,
                 arrays: Iterable[Any] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.home = home
        self.ship_globals = ship_globals
        self._known = known or {}
        self._changed = changed or {}
        self._updates_sent: set[int] = set()
        self._arrays = arrays  # arrays a view may be rebuilt against (see namespace_pickling.ArrayBases)
        self._bases: namespace_pickling.ArrayBases | None = None
        if self._changed:
            self.persistent_id = self._reference_or_update
        elif self._known:
            # persistent_id, not reducer_override: the C pickler never asks reducer_override about lists, dicts
            # and tuples. It is asked about every object, so it is installed only when there is something to find.
            lookup = self._known.get
            self.persistent_id = lambda obj: lookup(id(obj))

    def _reference_or_update(self, obj: Any) -> Any:
        """An unchanged known object: its name. A ``changed`` one (id -> name): the first time, its name and a
        shallow copy that travels by value (the receiver updates its own object in place from it,
        namespace_pickling.updated_object); after that its name, which by then stands for the updated object."""
        object_id = id(obj)
        name = self._known.get(object_id)
        if name is not None:
            return name
        name = self._changed.get(object_id)
        if name is None:
            return None
        if object_id in self._updates_sent:
            return name
        self._updates_sent.add(object_id)
        try:
            state = namespace_pickling.shallow_copy(obj)  # pickled by value, while `obj` stays a reference
        except Exception:  # noqa: BLE001 - cannot be copied: it travels by value as a new object
            state = None
        if state is None:
            self._updates_sent.discard(object_id)
            return None
        return ("update", name, state)

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is types.FunctionType:
            if self.home is not None and obj.__globals__ is self.home:
                return namespace_pickling.reduce_notebook_function(obj, self.home, self.ship_globals)
            by_reference = namespace_pickling.reduce_by_reference(obj)
            if by_reference is not None:
                return by_reference
        elif isinstance(obj, type):
            by_reference = namespace_pickling.reduce_by_reference(obj) or namespace_pickling.reduce_slotted_class(obj)
            if by_reference is not None:
                return by_reference
        elif kind.__name__ == "ndarray":
            if self._bases is None:
                self._bases = namespace_pickling.ArrayBases(self._arrays)
            view = namespace_pickling.reduce_array_view(obj, self._bases)
            if view is not None:
                return view
        else:
            cached = namespace_pickling.reduce_cached_function(obj)
            if cached is not None:
                return cached
        if isinstance(obj, OPEN_FILES):
            # cloudpickle would snapshot a readable file's whole content into a StringIO: a silent, possibly huge,
            # copy that no longer is the file. Refuse it like any other process-bound resource, both ways.
            raise TypeError(f"an open file ({getattr(obj, 'name', '?')!r}) belongs to the process that opened it; "
                            "send its path, or its contents (text = f.read())")
        if kind is types.CodeType:
            try:
                return marshal.loads, (marshal.dumps(obj),)
            except ValueError:  # a constant marshal cannot write (only hand-built code has one): cloudpickle's way
                pass
        return super().reducer_override(obj)
