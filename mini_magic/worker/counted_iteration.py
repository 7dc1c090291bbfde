"""Iterate at C speed and still know how far the loop got: what lets a mirrored tqdm bar cost (almost) nothing.

tqdm's own ``__iter__`` runs Python code for every item (a generator step, a counter, a comparison), which is two to
four times the cost of an empty loop body. A mirrored bar does not draw in the loop, so it does not need to run
anything there either: :func:`counted` gives the loop an iterator made only of C-level objects, together with a
function that tells, from any thread, how many items it has handed out. A watcher thread (:class:`Watcher`) reads
that a few times a second and redraws; the loop itself never calls back into Python.

- Built-in iterators with an exact length hint (list, tuple, range, str, bytes, dict views, sets, and the sequence
  iterator that numpy arrays use): the loop gets the plain iterator, and progress is the length hint's decrease.
  That is as fast as iterating without tqdm at all.
- Any other iterable (generators, files, custom iterators): the loop gets ``map(itemgetter(1), enumerate(it))``,
  and progress is the ``enumerate`` object's index (its ``__reduce__``, which is part of the builtin's pickle
  support). About a third more per item than a bare generator, with no Python frame per item.

The end of the loop must still be seen at once (a bar is closed when its loop ends, before whatever the cell prints
next): the iterator is chained to a sentinel whose ``__next__`` runs the ``on_end`` callback when the items run
out, and whose finalizer runs it when the loop is left early (``break``, an exception) and drops the iterator.
Standard library only.
"""

from __future__ import annotations

import itertools
import operator
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def _exact_hint_types() -> frozenset[type]:
    class _Sequence:  # the iterator Python makes for a class with __getitem__ and __len__ (numpy arrays use it)
        def __len__(self) -> int:
            return 0

        def __getitem__(self, index: int) -> Any:
            raise IndexError(index)

    samples: tuple[Iterable[Any], ...] = (
        [], (), range(0), range(2**64), "", "\u00e9", "\U0001f600", b"", bytearray(), {}, {}.values(), {}.items(),
        set(), frozenset(), _Sequence(),
    )
    return frozenset(type(iter(sample)) for sample in samples)


_EXACT_HINT = _exact_hint_types()
_second = operator.itemgetter(1)


class _EndOfLoop:
    """The last link of the chain: tells the bar that its loop is over, whichever way it ended."""

    __slots__ = ("_on_end",)

    def __init__(self, on_end: Callable[[bool], None]) -> None:
        self._on_end: Callable[[bool], None] | None = on_end

    def __iter__(self) -> _EndOfLoop:
        return self

    def __next__(self) -> Any:
        self._end(exhausted=True)
        raise StopIteration

    def _end(self, exhausted: bool) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(exhausted)

    def __del__(self) -> None:  # the loop was left early (break, an exception) and its iterator dropped
        self._end(exhausted=False)


def counted(iterable: Iterable[Any], on_end: Callable[[bool], None]) -> tuple[Iterator[Any], Callable[[], int]]:
    """An iterator over ``iterable`` and a function returning how many items it has produced so far.

    ``on_end(exhausted)`` is called once: with True when the items ran out, with False when the iterator was
    dropped before that."""
    it = iter(iterable)
    if type(it) in _EXACT_HINT:
        start = operator.length_hint(it, -1)
        if start >= 0:
            hint = it.__length_hint__  # type: ignore[attr-defined]
            return itertools.chain(it, _EndOfLoop(on_end)), lambda: start - hint()
    numbered = enumerate(it)
    position = numbered.__reduce__
    return itertools.chain(map(_second, numbered), _EndOfLoop(on_end)), lambda: position()[1][1]  # type: ignore[index]


class Watcher:
    """One daemon thread that calls ``poll()`` on every watched object every ``interval`` seconds, and sleeps
    (without waking) while there is nothing to watch. Objects are held weakly: a bar nobody holds is not kept."""

    THREAD_NAME = "mini-magic-progress"

    def __init__(self, interval: float,
                 start_thread: Callable[[Callable[[], None], str], threading.Thread] | None = None) -> None:
        self.interval = interval
        self._start_thread = start_thread or self._daemon
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, item: Any) -> None:
        with self._changed:
            self._watched.add(item)
            if self._thread is None:
                self._thread = self._start_thread(self._run, self.THREAD_NAME)
            self._changed.notify()

    @staticmethod
    def _daemon(target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def unwatch(self, item: Any) -> None:
        with self._changed:
            self._watched.discard(item)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._watched:
                    self._changed.wait()
            time.sleep(self.interval)
            for item in list(self._watched):
                try:
                    item.poll()
                except Exception:  # noqa: BLE001 - a bar that fails to redraw must not stop the others
                    self.unwatch(item)
