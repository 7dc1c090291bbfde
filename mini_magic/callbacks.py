"""``@hither``: functions that always run here, in the kernel, and that remote code calls through stubs.

Three shapes, as in mi-ni's ``@run.hither``::

    @hither
    def track(loss): ...                      # a bare callback (sync or async)

    @hither
    def live_plot(title):                     # a factory: called in a normal cell, it returns the callback
        ...; return update                    # (its state lives here, across runs)

    @hither
    @contextlib.asynccontextmanager           # (or contextlib.contextmanager) entered when a run starts,
    async def progress(total): ... yield step # exited after its last call has been delivered

A hither object, or the handle a factory call returns, travels to the worker as a reference id and is replaced
there by a stub (see worker/hither.py). Calls come back in batches and are dispatched in order by whoever drains the
run's events: the kernel's main thread for a foreground cell, a drainer thread for a background run.

Async callbacks and async context managers run on ONE dedicated event-loop thread (:class:`AsyncRunner`), not on
the kernel's own loop (that loop is blocked while a foreground cell waits); the dispatching thread waits for each
coroutine, so calls still complete in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from .worker import hither as stubs


class Hither:
    """A function decorated with ``@hither``. Calling it here runs it here; remote code gets a stub."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.ref_id = f"h-{uuid.uuid4().hex[:12]}"
        self.name = getattr(fn, "__qualname__", repr(fn))
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]
        stubs.register_local(self.ref_id, self)  # a stub of it that comes back turns into it again

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.fn(*args, **kwargs)
        described = f"{self.name}({_describe_args(args, kwargs)})"
        if isinstance(result, (contextlib.AbstractContextManager, contextlib.AbstractAsyncContextManager)):
            # Entered once per run that uses the handle: keep how to make a fresh one.
            return HitherHandle(described, factory=functools.partial(self.fn, *args, **kwargs))
        if callable(result):
            return HitherHandle(described, callback=result)
        return result

    def __repr__(self) -> str:
        return f"<hither {self.name}: runs in this kernel; remote cells call it through a stub>"


class HitherHandle:
    """What calling a factory (or context-manager) hither returns; reference it in a remote cell."""

    def __init__(self, name: str, *, callback: Callable[..., Any] | None = None,
                 factory: Callable[[], Any] | None = None) -> None:
        self.ref_id = f"h-{uuid.uuid4().hex[:12]}"
        self.name = name
        self.callback = callback
        self.factory = factory
        stubs.register_local(self.ref_id, self)  # a stub of it that comes back turns into it again

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.callback is None:
            raise TypeError(f"{self.name} is entered by each %%thither run that uses it; it cannot be called here")
        return self.callback(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<hither handle {self.name}>"


def hither(fn: Callable[..., Any]) -> Hither:
    """Mark ``fn`` as a local callback that remote code may call (see the module docstring for the shapes)."""
    if isinstance(fn, Hither):
        return fn
    return Hither(fn)


def _describe_args(args: tuple, kwargs: dict) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    text = ", ".join(parts)
    return text if len(text) <= 40 else text[:37] + "..."


class AsyncRunner:
    """One event loop on a daemon thread for every async callback of this kernel."""

    _instance: AsyncRunner | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mini-magic-hither-loop", daemon=True)
        self.thread.start()

    @classmethod
    def shared(cls) -> AsyncRunner:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def run(self, awaitable: Any) -> Any:
        """Run to completion on the loop thread, in the caller's context (so output routing follows the caller)."""
        context = contextvars.copy_context()
        outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def settle(task: asyncio.Task[Any]) -> None:
            if task.cancelled():
                outcome.set_exception(asyncio.CancelledError())
            elif task.exception() is not None:
                outcome.set_exception(task.exception())  # type: ignore[arg-type]
            else:
                outcome.set_result(task.result())

        def start() -> None:
            context.run(self.loop.create_task, _as_coroutine(awaitable)).add_done_callback(settle)

        self.loop.call_soon_threadsafe(start)
        return outcome.result()


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable


class HitherSession:
    """The hither objects one run uses: entered before it starts, called as its events arrive, exited after."""

    def __init__(self, refs: dict[str, Any], report: Callable[[str], None]) -> None:
        self.refs = refs
        self._report = report
        self._callables: dict[str, Callable[..., Any]] = {}
        self._managers: list[Any] = []
        self._failures: dict[str, list[BaseException]] = {}
        self.calls = 0

    def enter(self) -> None:
        """Resolve every reference to a callable; context managers are entered here (all or none)."""
        try:
            for ref_id, obj in self.refs.items():
                self._callables[ref_id] = self._resolve_callable(obj)
        except BaseException:
            self.exit(None)
            raise

    def _resolve_callable(self, obj: Any) -> Callable[..., Any]:
        if isinstance(obj, Hither):
            return obj.fn
        if obj.callback is not None:
            return obj.callback
        manager = obj.factory()
        if isinstance(manager, contextlib.AbstractAsyncContextManager):
            value = AsyncRunner.shared().run(manager.__aenter__())
        else:
            value = manager.__enter__()
        self._managers.append(manager)
        if not callable(value):
            raise TypeError(f"{obj.name} must yield a callable, got {type(value).__name__}")
        return value

    def dispatch(self, calls: Iterable[tuple[str, tuple, dict]]) -> None:
        for ref_id, args, kwargs in calls:
            self.calls += 1
            function = self._callables.get(ref_id)
            if function is None:
                continue
            try:
                result = function(*args, **kwargs)
                if inspect.isawaitable(result):
                    AsyncRunner.shared().run(result)
            except Exception as exc:  # noqa: BLE001 - a callback's failure is reported, the run goes on
                self._failed(ref_id, exc)

    def _failed(self, ref_id: str, exc: BaseException) -> None:
        seen = self._failures.setdefault(ref_id, [])
        seen.append(exc)
        if len(seen) == 1:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self._report(f"hither callback {self._name(ref_id)} raised (the run continues; later failures of it are "
                         f"only counted):\n{text}")

    def _name(self, ref_id: str) -> str:
        obj = self.refs.get(ref_id)
        return getattr(obj, "name", ref_id)

    def exit(self, exc: BaseException | None) -> None:
        """Exit entered context managers, newest first; their own errors are reported, never raised."""
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else (None, None, None)
        while self._managers:
            manager = self._managers.pop()
            try:
                if isinstance(manager, contextlib.AbstractAsyncContextManager):
                    AsyncRunner.shared().run(manager.__aexit__(*exc_info))
                else:
                    manager.__exit__(*exc_info)
            except Exception as error:  # noqa: BLE001 - teardown failures are reported
                self._report("a hither context manager failed while closing:\n"
                             + "".join(traceback.format_exception(type(error), error, error.__traceback__)))

    def summary(self) -> str | None:
        """One line per callback that raised, or None."""
        if not self._failures:
            return None
        lines = []
        for ref_id, errors in self._failures.items():
            first = errors[0]
            lines.append(f"hither callback {self._name(ref_id)} raised {len(errors)} time(s) "
                         f"(first: {type(first).__name__}: {first}); the run itself continued.")
        return "\n".join(lines) + "\n"
