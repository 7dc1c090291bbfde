"""Worker side of a call job: call the function the way Python would, whatever kind of function it is.

The runner (:mod:`.runner`) sets up everything a call shares with a cell (output capture, hither buffer, interrupt
handler, saved interpreter state) and hands the call here. A coroutine function is awaited; a generator (sync or
async) is iterated here, in the worker, and each item is handed to ``send_item`` as soon as it is produced, so the
kernel sees the first item while the generator still runs. Standard library only.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any


def invoke(function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
           send_item: Callable[[Any], None]) -> Any:
    """Call ``function(*args, **kwargs)``; return its return value (a generator's ``return`` value, None for an
    async generator). If ``send_item`` raises (an item that cannot travel), the generator is closed first, so its
    ``finally`` blocks run in the worker as they would when a local loop stops early."""
    result = function(*args, **kwargs)
    if inspect.isgenerator(result):
        return _drive(result, send_item)
    if inspect.iscoroutine(result) or inspect.isasyncgen(result):
        loop = asyncio.new_event_loop()
        try:
            if inspect.iscoroutine(result):
                return loop.run_until_complete(result)
            return _drive_async(loop, result, send_item)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
    return result


ITEM = "mini_magic_item"  # set on an exception raised by one call of a batch: its place in the batch


def each(function: Callable[..., Any], calls: list[tuple[tuple[Any, ...], dict[str, Any]]], *,
         around: Callable[[], AbstractContextManager[Any]] = nullcontext) -> list[Any]:
    """A batch of a map's calls in one job: ``[function(*args, **kwargs) for args, kwargs in calls]``, each call made
    as :func:`invoke` makes one, inside its own ``around()`` (the run's guards: entered per call, as for a call that
    is a job of its own). The first call that raises ends the batch; its exception says which call it was
    (attribute :data:`ITEM`), so the map names the item."""
    results = []
    for index, (args, kwargs) in enumerate(calls):
        try:
            with around():
                results.append(invoke(function, list(args), kwargs, _no_items))
        except Exception as exc:
            try:
                setattr(exc, ITEM, index)
            except (AttributeError, TypeError):
                pass
            raise
    return results


def _no_items(item: Any) -> None:  # a map refuses generator functions before it builds any batch
    raise TypeError("a map's function yielded an item")


def _drive(generator: Any, send_item: Callable[[Any], None]) -> Any:
    try:
        while True:
            try:
                item = next(generator)
            except StopIteration as stop:
                return stop.value
            send_item(item)
    finally:
        generator.close()  # a no-op once it finished; runs its finally blocks when we stop early


def _drive_async(loop: asyncio.AbstractEventLoop, generator: Any, send_item: Callable[[Any], None]) -> None:
    try:
        while True:
            try:
                item = loop.run_until_complete(generator.__anext__())
            except StopAsyncIteration:
                return
            send_item(item)
    finally:
        loop.run_until_complete(generator.aclose())
