"""Call jobs (a function and its arguments, no cell) on the local backend, with real worker processes.

No kernel is needed: the session runs without IPython (as bench/bench_roundtrip.py drives it). The "notebook" is a
dict holding functions compiled under a cell-like filename with their source in linecache, as IPython leaves them,
so they travel as notebook functions (rebuilt remotely with the run's namespace as globals).
"""

from __future__ import annotations

import linecache
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mini_magic import session
from mini_magic.backends.base import Backend
from mini_magic.backends.local import LocalBackend
from mini_magic.callbacks import hither
from mini_magic.errors import RunCancelled, RunTimeout
from mini_magic.jobs import CellContext, build_call_job, build_job
from mini_magic.options import RunOptions
from mini_magic.runs import RunRegistry, RunState
from mini_magic.sinks import ListSink

pytestmark = pytest.mark.slow

NOTEBOOK = '''
import asyncio, os, time

SCALE = 10

def scaled(x, *, offset=0):
    print("scaling", x)
    return x * SCALE + offset

def stats(a, power=1):
    return {"sum": int((a ** power).sum()), "doubled": a * 2}

def failing(n):
    raise ValueError(f"bad {n}")

def report(callback, n):
    for i in range(n):
        callback(i)
    print("reported")
    return n

def produce(path):
    print("before 0")
    yield 0
    while not os.path.exists(path):  # the test creates it once it has seen item 0
        time.sleep(0.01)
    yield 1
    yield {"two": SCALE}
    return "done"

def endless():
    i = 0
    while True:
        yield i
        i += 1
        time.sleep(0.01)

def blocks():
    time.sleep(600)

async def doubled_later(x):
    await asyncio.sleep(0.01)
    return 2 * x

async def count_async(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i
'''


def notebook(cell: str = "<notebook cell 1>") -> dict[str, Any]:
    """A namespace like a kernel's: its functions' code names a cell whose source only linecache holds."""
    source = textwrap.dedent(NOTEBOOK)
    linecache.cache[cell] = (len(source), None, source.splitlines(keepends=True), cell)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, cell, "exec"), namespace)  # noqa: S102 - the test's own notebook
    return namespace


@pytest.fixture(scope="module")
def local_backend() -> Iterator[LocalBackend]:
    backend = LocalBackend(max_workers=2, prewarm=False)
    yield backend
    backend.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunRegistry]:
    registry = RunRegistry(tmp_path / "runs.db", kernel_id="k")
    yield registry
    registry.close()


def call(backend: Backend, registry: RunRegistry, fn: Callable[..., Any], *args: Any,
         options: RunOptions | None = None, sink: ListSink | None = None,
         on_yield: Callable[[Any], None] | None = None, **kwargs: Any) -> session.RunOutcome:
    """Run ``fn(*args, **kwargs)`` as a call job through the session's one foreground path."""
    options = options or RunOptions(backend=backend.name, timeout=120)
    context = CellContext(label="call", widgets=False)
    return session.run_foreground(lambda keys: build_call_job(fn, args, kwargs, options, context, keys), options,
                                  backend=backend, registry=registry, sink=sink or ListSink(), context=context,
                                  show_panel=False, on_yield=on_yield)


def stdout(sink: ListSink) -> str:
    return "".join(text for kind, text in sink.outputs if kind == "stdout")


def test_a_call_returns_its_value_and_its_output_arrives(local_backend: LocalBackend, registry: RunRegistry) -> None:
    nb, sink = notebook(), ListSink()
    result = call(local_backend, registry, nb["scaled"], 4, offset=2, sink=sink)
    assert result.returned == 42 and result.assigned == [] and result.yielded == []
    assert stdout(sink) == "scaling 4\n"
    assert result.record.state is RunState.DONE


def test_arguments_travel_like_closure_values(local_backend: LocalBackend, registry: RunRegistry) -> None:
    nb = notebook()
    a = np.arange(6)
    result = call(local_backend, registry, nb["stats"], a, power=2)
    assert result.returned["sum"] == int((a ** 2).sum())
    np.testing.assert_array_equal(result.returned["doubled"], a * 2)


def test_a_notebook_function_reads_its_globals_remotely(local_backend: LocalBackend, registry: RunRegistry) -> None:
    nb = notebook()
    nb["SCALE"] = 100  # the value at call time travels, as a global the function reads
    assert call(local_backend, registry, nb["scaled"], 3).returned == 300


def test_a_hither_callback_passed_as_an_argument_is_called_here(local_backend: LocalBackend,
                                                                registry: RunRegistry) -> None:
    nb, sink, seen = notebook(), ListSink(), []
    result = call(local_backend, registry, nb["report"], hither(seen.append), 50, sink=sink)
    assert result.returned == 50 and seen == list(range(50))
    assert stdout(sink) == "reported\n"


def test_an_exception_comes_back_with_its_type_and_the_functions_source(local_backend: LocalBackend,
                                                                         registry: RunRegistry) -> None:
    with pytest.raises(ValueError, match="bad 3") as caught:
        call(local_backend, registry, notebook()["failing"], 3)
    rendered = "\n".join(caught.value._render_traceback_())  # type: ignore[attr-defined]
    assert 'raise ValueError(f"bad {n}")' in rendered and "<notebook cell 1>" in rendered
    assert registry.recent()[0].state is RunState.FAILED


def test_a_generators_items_arrive_in_order_while_it_runs(local_backend: LocalBackend, registry: RunRegistry,
                                                          tmp_path: Path) -> None:
    nb, sink = notebook(), ListSink()
    gate = tmp_path / "go"
    items: list[Any] = []
    seen_output_first: list[bool] = []

    def on_yield(item: Any) -> None:
        items.append(item)
        if item == 0:  # the generator waits for this file: item 0 is here while it still runs
            seen_output_first.append(stdout(sink) == "before 0\n")
            gate.touch()

    result = call(local_backend, registry, nb["produce"], str(gate), sink=sink, on_yield=on_yield)
    assert items == [0, 1, {"two": 10}] and result.returned == "done"
    assert seen_output_first == [True]  # what the generator printed before yielding came before the item


def test_without_on_yield_the_items_are_kept_for_the_caller(local_backend: LocalBackend,
                                                            registry: RunRegistry) -> None:
    result = call(local_backend, registry, notebook()["count_async"], 4)
    assert result.yielded == [0, 1, 2, 3] and result.returned is None


def test_an_async_function_is_awaited(local_backend: LocalBackend, registry: RunRegistry) -> None:
    assert call(local_backend, registry, notebook()["doubled_later"], 21).returned == 42


def test_a_timeout_stops_a_call(local_backend: LocalBackend, registry: RunRegistry) -> None:
    with pytest.raises(RunTimeout):
        call(local_backend, registry, notebook()["blocks"], options=RunOptions(backend="local", timeout=1))
    assert registry.recent()[0].state is RunState.FAILED


def test_cancel_stops_an_endless_generator(local_backend: LocalBackend, registry: RunRegistry) -> None:
    items: list[int] = []

    def on_yield(item: int) -> None:
        items.append(item)
        if item == 2:
            session.request_cancel(registry.active()[0].run_id)

    with pytest.raises(RunCancelled):
        call(local_backend, registry, notebook()["endless"], on_yield=on_yield)
    assert items[:3] == [0, 1, 2] and registry.recent()[0].state is RunState.CANCELLED
    assert call(local_backend, registry, notebook()["scaled"], 1).returned == 10  # the backend still serves


def cell_and_call_share_the_session(backend: Backend, registry: RunRegistry, timeout: float = 120) -> None:
    """A cell job and a call job through the same session.run_foreground: both recorded, both outcomes right."""
    options = RunOptions(backend=backend.name, timeout=timeout)
    context = CellContext(label="shared", widgets=False)
    nb, sink = notebook(), ListSink()
    nb["x"] = 4
    cell = session.run_foreground(lambda keys: build_job("y = scaled(x)", nb, options, context, keys), options,
                                  backend=backend, registry=registry, sink=sink, context=context, show_panel=False)
    items: list[Any] = []
    called = session.run_foreground(lambda keys: build_call_job(nb["count_async"], (3,), {}, options, context, keys),
                                    options, backend=backend, registry=registry, sink=sink, context=context,
                                    show_panel=False, on_yield=items.append)
    returned = session.run_foreground(lambda keys: build_call_job(nb["scaled"], (5,), {}, options, context, keys),
                                      options, backend=backend, registry=registry, sink=sink, context=context,
                                      show_panel=False)
    assert nb["y"] == 40 and cell.assigned == ["y"]
    assert items == [0, 1, 2] and returned.returned == 50 and returned.assigned == []
    records = {r.run_id: r for r in registry.recent()}
    assert {cell.record.run_id, called.record.run_id, returned.record.run_id} <= set(records)
    assert all(records[r.record.run_id].state is RunState.DONE for r in (cell, called, returned))
    assert stdout(sink) == "scaling 4\nscaling 5\n"
    assert session._ACTIVE == {}


def test_a_cell_job_and_a_call_job_share_the_session_path(local_backend: LocalBackend,
                                                          registry: RunRegistry) -> None:
    cell_and_call_share_the_session(local_backend, registry)
