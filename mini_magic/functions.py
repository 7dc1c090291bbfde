"""``@thither`` functions: a function whose calls run in a worker, through the same run session as a cell.

``train(3)`` blocks and returns the value; output, displays, mirrored tqdm bars and hither callbacks stream into the
calling cell (or a script's stdout). A generator function's call streams its items as the worker yields them; an
``async def`` function's call is awaited without blocking the event loop; ``.spawn`` returns a handle at once
(:class:`FunctionCall`); ``.map``/``.starmap`` fan out (mini_magic.fan_out). Every call is a call job
(:func:`mini_magic.jobs.build_call_job`): one run in the registry, the panel and the lab extension, with the
options of a ``%%thither`` cell given as keywords (mini_magic.call_options).

Inside a worker (a ``%%thither`` cell, or another ``@thither`` function) a call runs right there, as a plain call:
the worker already is the remote side. ``.local(...)`` runs the function here, anywhere.

A decorated function pickles as a plain object (its function and its options), so it travels into a cell or another
function's globals like any notebook function, and calls itself recursively in the worker.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import reprlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .worker.context import in_worker

if TYPE_CHECKING:
    from .call_modes import CallSetup, FunctionCall
    from .jobs import JobSpec

_ARGS = reprlib.Repr()
_ARGS.maxstring = 20
_ARGS.maxother = 20


def thither(function: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make ``function`` run in a worker when called: ``@thither`` or ``@thither(gpu="L4", timeout=600)``.

    The options are those of ``%%thither`` as keywords (``backend``, ``gpu``, ``timeout``, ``env`` (a dict),
    ``volumes``, ``secrets``, and the backend's own, e.g. ``pip=["torch"]`` on Modal); what is not given comes from
    ``%config Thither`` and the environment when the function is called. An unknown option is refused here.
    """
    from . import call_options, guards
    from .config import Thither
    from .errors import ThitherUsageError

    owner = f"@thither({', '.join(options)})" if options else "@thither"
    run_guards = [guards.make(g) for g in options.pop("guards", None) or ()]
    call_options.resolve(options, Thither(), owner)  # every check a cell's flags get, now

    def decorate(fn: Callable[..., Any]) -> ThitherFunction:
        if not callable(fn):
            raise ThitherUsageError(f"@thither decorates a function, not {type(fn).__name__}.")
        return ThitherFunction(fn, options, run_guards)

    return decorate(function) if function is not None else decorate


class ThitherFunction:
    """A function whose calls run in a worker (see the module's docstring)."""

    def __init__(self, function: Callable[..., Any], options: dict[str, Any], guards: list[Any] | None = None, *,
                 cwd: str | None = None, imports: tuple[str, ...] = ()) -> None:
        """``cwd`` and ``imports``: where the calls run and local modules to ship besides those the function
        references (``invoke`` ships a file's module by name)."""
        self.function = function
        self.options = dict(options)
        self.guards = list(guards or ())
        self.cwd = cwd
        self.imports = imports
        self.label: str | None = None  # the runs' label in the registry; default: the call as written
        functools.update_wrapper(self, function)

    # -- how a call runs ----------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if in_worker():
            return self.function(*args, **kwargs)
        from . import call_modes

        if inspect.isgeneratorfunction(self.function) or inspect.isasyncgenfunction(self.function):
            return call_modes.RemoteGenerator(self, args, kwargs)
        if inspect.iscoroutinefunction(self.function):
            return call_modes.awaited(self, args, kwargs)
        return call_modes.blocking(self, args, kwargs)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here, in this process (for tests, debugging, documentation)."""
        return self.function(*args, **kwargs)

    def spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        """Start a call and return its handle at once: ``.result()``, ``.cancel()``, ``.state``, ``.stream()``.
        Inside a worker the call runs on a thread of that worker (mini_magic.worker.threads)."""
        if in_worker():
            from .worker.threads import LocalCall

            return LocalCall(self.function, args, kwargs)  # type: ignore[return-value]
        from .call_modes import spawn

        return spawn(self, args, kwargs)

    def map(self, *iterables: Any, return_exceptions: bool = False) -> list[Any]:
        """``[f(a, b) for a, b in zip(*iterables)]``, the calls fanned out; results in input order."""
        return self._map([(args, {}) for args in zip(*iterables)], return_exceptions)

    def starmap(self, arguments: Any, return_exceptions: bool = False) -> list[Any]:
        """``[f(*args) for args in arguments]``, the calls fanned out; results in input order."""
        return self._map([(tuple(args), {}) for args in arguments], return_exceptions)

    def _map(self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]], return_exceptions: bool) -> list[Any]:
        if in_worker():
            from .worker.threads import map_here

            return map_here(self.function, calls, return_exceptions)
        from .fan_out import run_map

        return run_map(self, calls, return_exceptions=return_exceptions)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"<thither function {self.__qualname__}({options})>"

    # -- shared by every way of calling --------------------------------------------------------------------

    def setup(self, args: tuple[Any, ...], *, label: str | None = None) -> CallSetup:
        """Where and how a call runs now: the runtime, options after precedence, backend and run context."""
        from . import call_options
        from . import runtime as runtimes
        from .call_modes import CallSetup

        runtime = runtimes.current()
        options = call_options.resolve(self.options, runtime.config, f"@thither {self.__qualname__}")
        backend = runtime.backend(options.backend)
        if label is None:
            label = self.label or f"{self.__qualname__}({', '.join(_ARGS.repr(a) for a in args)})"[:80]
        context = runtimes.request_context(runtime.shell, label=label, hither_interval=backend.hither_interval)
        if self.cwd is not None:
            context = dataclasses.replace(context, cwd=self.cwd)
        return CallSetup(runtime, options, backend, context, runtime.config.interrupt_grace)

    def builder(self, setup: CallSetup, args: tuple[Any, ...], kwargs: dict[str, Any]
                ) -> Callable[[tuple[str, ...]], JobSpec]:
        from .jobs import build_call_job

        return lambda secret_keys: build_call_job(self.function, args, kwargs, setup.options, setup.context,
                                                  secret_keys, run_guards=self.guards, imports=self.imports)

    def batch_builder(self, setup: CallSetup, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
                      ) -> Callable[[tuple[str, ...]], JobSpec]:
        """Several calls in one job (mini_magic.worker.calls.each), for a map: the function travels once and the
        per-job cost is paid once per batch. The function keeps its own namespace, as in :meth:`builder`."""
        from .jobs import build_call_job, home_namespace
        from .worker.calls import each

        return lambda secret_keys: build_call_job(each, (self.function, calls), {}, setup.options, setup.context,
                                                  secret_keys, namespace=home_namespace(self.function),
                                                  run_guards=self.guards, imports=self.imports)


def gather(*calls: FunctionCall, timeout: float | None = None) -> list[Any]:
    """The results of spawned calls, in the order given; the first call (in that order) that failed raises its
    error (the others go on; cancel them with ``.cancel()``). ``timeout`` bounds the whole wait."""
    for call in calls:
        if not callable(getattr(call, "result", None)):
            from .errors import ThitherUsageError

            raise ThitherUsageError(f"gather() takes the handles .spawn(...) returns, not {type(call).__name__}.")
    deadline = None if timeout is None else time.monotonic() + timeout
    results = []
    for call in calls:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        results.append(call.result(left))
    return results
