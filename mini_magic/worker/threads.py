"""Worker side of ``.map`` and ``.spawn`` of a ``@thither`` function called INSIDE a worker (a ``%%thither`` cell,
or another ``@thither`` function): the worker already is the remote side, so the calls run here, on threads, never
as new remote submissions. numpy, I/O and GPU work overlap on threads; pure Python shares the GIL. Output, hither
stubs and mirrored bars work from these threads as from the run's own (the current run is process-wide, see
:mod:`.context`). Standard library only.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .calls import invoke

MAX_THREADS = 32


def map_here(function: Callable[..., Any], calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
             return_exceptions: bool) -> list[Any]:
    """Every call's result in input order; the first error raises unless ``return_exceptions``."""

    def one(call: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
        try:
            return invoke(function, list(call[0]), call[1], _no_items)
        except Exception as exc:
            if return_exceptions:
                return exc
            raise

    threads = max(1, min(MAX_THREADS, len(calls), (os.cpu_count() or 1) + 4))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mini-magic-map") as pool:
        return list(pool.map(one, calls))


def _no_items(item: Any) -> None:
    raise TypeError("map() collects return values; a generator function's items have nowhere to go")


def items_until(items: queue.SimpleQueue[Any], finished: Callable[[], bool],
                wait: Callable[[float], Any]) -> Iterator[Any]:
    """A call's yielded items as they arrive, until the call has finished and every item is taken (a spawned
    call's ``stream()``, here and in the kernel)."""
    while True:
        done = finished()
        while not items.empty():
            yield items.get()
        if done:
            return
        wait(0.01)


class LocalCall:
    """A call spawned inside a worker: it runs on a thread of this process. ``result(timeout)``, ``state``,
    ``done()``, ``wait(timeout)``, ``stream()`` (a generator's items). A running thread cannot be stopped, so
    ``cancel()`` is refused rather than pretending."""

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.label = f"{getattr(function, '__qualname__', 'call')}(...)"
        self._items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._streamed = False
        threading.Thread(target=self._run, args=(function, args, kwargs), daemon=True,
                         name=f"mini-magic-spawn-{self.label}").start()

    def _run(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            self._value = invoke(function, list(args), kwargs, self._items.put)
        except BaseException as exc:  # noqa: BLE001 - raised by result()
            self._error = exc
        finally:
            self._done.set()

    @property
    def state(self) -> str:
        if not self._done.is_set():
            return "running"
        return "failed" if self._error is not None else "done"

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self, timeout: float | None = None) -> Any:
        if not self._done.wait(timeout):
            raise TimeoutError(f"the call {self.label} is still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value

    def stream(self) -> Iterator[Any]:
        if self._streamed:
            raise RuntimeError(f"call {self.label}: .stream() was already consumed; a call's items stream once.")
        self._streamed = True
        return self._stream()

    def _stream(self) -> Iterator[Any]:
        yield from items_until(self._items, self._done.is_set, self._done.wait)
        self.result()

    def cancel(self) -> None:
        raise RuntimeError(f"call {self.label} runs on a thread of this worker, which cannot be stopped from "
                           "outside; make the function check a threading.Event if it must stop early.")

    def __repr__(self) -> str:
        return f"<thither call {self.label} (in this worker): {self.state}>"
