"""counted(): the loop's items unchanged, an exact count readable at any point, and the end seen whichever way the
loop ends (the mirrored tqdm bar is built on it)."""

from __future__ import annotations

import gc
import threading

import pytest

from mini_magic.worker.counted_iteration import Watcher, counted


SOURCES = {  # each makes a fresh iterable: with an exact length hint, then without one
    "list": lambda: list(range(7)), "tuple": lambda: tuple("abcdefg"), "range": lambda: range(7),
    "long range": lambda: range(2**64, 2**64 + 7), "str": lambda: "abcdefg", "wide str": lambda: "\u00e9" * 7,
    "bytes": lambda: b"1234567", "dict": lambda: dict.fromkeys(range(7)), "set": lambda: set(range(7)),
    "numpy": lambda: pytest.importorskip("numpy").arange(7),
    "generator": lambda: (i for i in range(7)), "list iterator": lambda: iter(list(range(7))),
    "map": lambda: map(str, range(7)),
}


@pytest.mark.parametrize("kind", SOURCES)
def test_items_and_count_at_every_step(kind: str) -> None:
    expected = list(SOURCES[kind]())
    source = SOURCES[kind]()
    ends: list[bool] = []
    iterator, produced = counted(source, ends.append)
    seen = []
    for item in iterator:
        seen.append(item)
        assert produced() == len(seen)
        assert not ends
    assert [str(x) for x in seen] == [str(x) for x in expected]  # str: numpy scalars
    assert ends == [True]


def test_a_loop_left_early_ends_once_as_not_exhausted() -> None:
    ends: list[bool] = []
    iterator, produced = counted(range(100), ends.append)
    for i in iterator:
        if i == 41:
            break
    assert produced() == 42
    del iterator
    gc.collect()
    assert ends == [False]


def test_an_exception_in_the_loop_ends_it() -> None:
    ends: list[bool] = []

    def loop() -> None:
        for i in counted((x for x in range(100)), ends.append)[0]:
            if i == 5:
                raise ValueError(i)

    with pytest.raises(ValueError):
        loop()
    assert ends == [False]


def test_the_watcher_polls_while_watched_and_lets_go() -> None:
    class Item:
        def __init__(self) -> None:
            self.polled = threading.Event()

        def poll(self) -> None:
            self.polled.set()

    watcher = Watcher(0.01)
    item = Item()
    watcher.watch(item)
    assert item.polled.wait(5)
    watcher.unwatch(item)
    assert not watcher._watched
