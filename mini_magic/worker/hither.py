"""Worker side of hither callbacks: stubs that never wait, and the buffer that ships their calls in batches.

A ``@hither`` object referenced by a remote cell travels as a :class:`HitherStub` (a reference id, never the
function). Calling the stub appends ``(ref_id, args, kwargs)`` to the run's :class:`CallBuffer` and returns None at
once; a flusher thread ships the calls in order, in batches bounded in time (the backend's flush interval) and in
size. Only if the backlog would grow without bound (the kernel cannot keep up) does a call wait for room.
Stubs find the run's buffer through :mod:`.context`, from whatever thread calls them. Standard library and
cloudpickle only.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from .. import wire
from ..scrub import Scrubber
from . import context

MAX_BATCH = 20_000  # calls per event
MAX_PENDING = 1_000_000  # calls buffered before a stub call waits for the flusher (backpressure)

_NAMES: dict[str, str] = {}  # ref_id -> the callback's name, for messages

# The live hither objects of this process, by reference id: filled in the kernel only (mini_magic.callbacks registers
# each one it makes), so that a stub coming *back* in a result turns into the live local object again.
_LOCAL: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def register_local(ref_id: str, obj: Any) -> None:
    """Where a stub of ``ref_id`` is unpickled in this process, it becomes ``obj`` (as long as ``obj`` lives)."""
    _LOCAL[ref_id] = obj


def local_object(ref_id: str) -> Any:
    """The live object registered for ``ref_id`` in this process, or None."""
    return _LOCAL.get(ref_id)


def _rebuild(ref_id: str, name: str) -> Any:
    found = _LOCAL.get(ref_id)
    return found if found is not None else HitherStub(ref_id, name)


class HitherStub:
    """Stands in, remotely, for a local callback. Calls are recorded, not run; they return None at once."""

    __slots__ = ("ref_id", "name")

    def __init__(self, ref_id: str, name: str) -> None:
        self.ref_id = ref_id
        self.name = name
        _NAMES[ref_id] = name

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        run = context.current()
        buffer = run.calls if run is not None else None
        if buffer is None:
            why = "no run is active in this process (a thread that outlived its cell?)" if run is None else \
                "this run was started without hither calls"
            context.report_outside_run(f"hither:{self.ref_id}", f"hither: calls to {self.name} are dropped: {why}.")
            return
        buffer.append(self.ref_id, args, kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.ref_id, self.name))

    def __repr__(self) -> str:
        return f"<hither stub for {self.name}: calls run in the notebook kernel>"


class CallBuffer:
    """Collects stub calls of one run and emits them as ``HitherCalls`` events from a flusher thread."""

    def __init__(self, emit: Callable[..., None], interval: float, before_emit: Callable[[], None] | None = None):
        """``before_emit``: called before the pending calls are taken (the runner passes its output capture's sync),
        so what the cell printed before a call reaches the notebook before the callback's own output."""
        self._emit = emit
        self._interval = interval
        self._before_emit = before_emit
        self._calls: list[tuple[str, tuple, dict]] = []
        self.scrubber = Scrubber()  # the worker's secret values: they must not travel in a call's arguments
        self._mutex = threading.Lock()  # guards _calls: a stub's append against the flusher's swap
        self._lock = threading.Lock()  # serialises flushes so batches keep their order
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._stopped = False
        self._closed = False  # the final flush is done: a later call would never be shipped
        self._thread = threading.Thread(target=self._run, name="mini-magic-hither-flush", daemon=True)
        self._thread.start()

    def append(self, ref_id: str, args: tuple, kwargs: dict) -> None:
        if self._closed:
            name = _NAMES.get(ref_id, ref_id)
            context.report_outside_run(f"hither:{ref_id}", f"hither: calls to {name} are dropped: the run they "
                                       "belong to has delivered its last calls (a thread that outlived its cell?).")
            return
        with self._mutex:
            self._calls.append((ref_id, args, kwargs))
            pending = len(self._calls)
        if pending >= MAX_BATCH:
            self._wake.set()
            if pending >= MAX_PENDING:
                with self._room:
                    while len(self._calls) >= MAX_PENDING and not self._stopped:
                        self._room.wait(0.1)

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Ship everything buffered so far (called by the flusher, and by the worker before output it orders)."""
        with self._lock:
            if self._calls and self._before_emit is not None:
                self._before_emit()
            with self._mutex:
                pending, self._calls = self._calls, []
            with self._room:
                self._room.notify_all()
            for start in range(0, len(pending), MAX_BATCH):
                self._ship(pending[start : start + MAX_BATCH])

    def _ship(self, batch: list[tuple[str, tuple, dict]]) -> None:
        packed, failures = wire.pack_values({"calls": batch}, skip_failures=True)
        if failures or self.scrubber.found_in(packed):
            # Some calls cannot (or must not) travel: ship the others, name the dropped ones.
            good = []
            for call in batch:
                one, bad = wire.pack_values({"call": call}, skip_failures=True)
                name = _NAMES.get(call[0], call[0])
                if bad:
                    self._emit(wire.Stderr, text=f"hither: a call to {name} was dropped: its arguments cannot "
                               f"be sent to the kernel ({bad['call'].cause}).\n")
                elif self.scrubber.found_in(one):
                    self._emit(wire.Stderr, text=f"hither: a call to {name} was dropped: its arguments hold a "
                               "secret value (--secret); secrets never leave the worker.\n")
                else:
                    good.append(call)
            if not good:
                return
            packed, _ = wire.pack_values({"calls": good}, skip_failures=True)
        self._emit(wire.HitherCalls, calls=packed)

    def close(self) -> None:
        """Final flush; afterwards stubs of this run record nothing."""
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()
        self._closed = True
