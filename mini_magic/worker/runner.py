"""The remote side of a run, the same code in a local worker process and in a Modal container: the Worker runs jobs.

A worker receives Jobs, runs each cell in a fresh namespace holding only its closure (or calls the function a call
job carries, its globals in that namespace: :mod:`.calls`), streams events back (output, displays, a call's
yielded items, then a Result or an Error) and restores its process state (environment, working directory, ``sys.path``,
local modules) after every run, so nothing leaks from one run into the next. While a job runs, it is the process's
current run (:mod:`.context`), which hither stubs and tqdm bars find from any thread. How events leave the process
is the entry point's business (:mod:`.bootstrap`). Standard library and cloudpickle only.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import linecache
import mmap
import os
import signal
import socket
import sys
import threading
import traceback
from types import ModuleType, TracebackType
from typing import Any

from .. import library_settings, proctree, wire
from ..placeholder import NOT_SENT
from ..scrub import MIN_LENGTH
from . import calls as call_jobs
from . import context
from .guards import guarded
from .hither import CallBuffer
from .inputs import RunInputs
from .modules import ShippedModules, evict_local_modules
from .output import EventSender, OutputCapture
from .shell import WorkerShell
from .state import InterpreterState, environ_snapshot, restore_environ

# The whole mini_magic package, not only worker/: a traceback's leading frames in wire or pickler are ours too.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# asyncio's frames between the runner and an awaited function (or a cell's top-level await) are no user code either.
_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__))
_HIDDEN_NAMES = frozenset({"__builtins__", "get_ipython"})


class Worker:
    """Runs jobs one after another; ``sender`` carries events, ``capture`` the fd-level output."""

    def __init__(self, sender: EventSender, capture: OutputCapture | None, display: Any = None) -> None:
        self.sender = sender
        self.capture = capture
        self.display = display

    def sync_output(self) -> None:
        """Ship buffered hither calls and captured output before an event that must come after them."""
        run = context.current()
        if run is not None:
            run.flush_calls()
        if self.capture is not None:
            self.capture.sync()

    def handle(self, frames: list[Any]) -> None:
        """Check the header of one job message before unpickling anything, then run it.

        Takes the frames: it empties the list, which the receive loop would otherwise keep (with the job's inputs)
        until the next job arrives."""
        first, *body = frames
        frames.clear()
        header = wire.JobHeader.from_dict(wire.read_control(first))
        problem = header.mismatch()
        if problem is not None:
            self.sender.emit(
                wire.Error,
                type_module="mini_magic.errors",
                type_qualname="ProtocolMismatch",
                message=problem,
                traceback="",
            )
            return
        self.run(wire.decode_job(header, body))

    def run(self, job: wire.Job) -> None:
        self.sender.emit(wire.Started, run_id=job.header.run_id, pid=os.getpid(), host=socket.gethostname())
        saved = _ProcessState.save()
        if self.capture is not None:
            self.capture.sync()  # what leftovers of an earlier run printed goes to the log, not into this cell
            self.capture.active = True
        # From now on, for the worker's whole life (a leftover thread may print them after the run).
        too_short = self.sender.scrubber.add_keys(job.secret_keys)
        if too_short:
            self.sender.emit(wire.Stderr, text=f"mini_magic: --secret: the value of {', '.join(too_short)} is "
                             f"shorter than {MIN_LENGTH} characters, too short to be scrubbed from output safely; "
                             "it is not.\n")
        calls = None
        if job.hither_interval is not None:
            calls = CallBuffer(self.sender.emit, job.hither_interval,
                               before_emit=self.capture.sync if self.capture is not None else None)
            calls.scrubber = self.sender.scrubber
        previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with context.running(context.RunContext(job.header.run_id, self.sender.emit, calls, self.sync_output)):
                self._run(job, saved, calls)
        finally:
            signal.signal(signal.SIGINT, previous_handler)
            self.sync_output()
            if self.capture is not None:
                self.capture.active = False
            saved.restore()
            evict_local_modules(job.modules, job.cwd, saved.modules)
            saved.release()

    def _run(self, job: wire.Job, saved: _ProcessState, calls: CallBuffer | None) -> None:
        try:
            os.environ.update(job.env)
            if job.cwd and os.path.isdir(job.cwd):
                os.chdir(job.cwd)
            _register_sources(job)
            library_settings.apply(job.settings)  # the kernel's (np.set_printoptions ...), undone by restore()
            saved.settings_sent = library_settings.capture()
            with ShippedModules(job.modules):
                namespace, inputs, call, run_guards = self._namespace(job)
                saved.namespace = namespace
                initial = dict(namespace)
                if self.display is not None:
                    self.display.before_run()
                function, args, kwargs = wire.split_call(call) if call is not None else (None, [], {})
                batch = function is call_jobs.each  # a map's batch: each call under the guards, as on its own
                with guarded([] if batch else run_guards):
                    if call is None:
                        has_value, value = _execute(job, namespace)
                    elif batch:
                        has_value, value = False, call_jobs.each(*args, around=lambda: guarded(run_guards))
                    else:
                        has_value, value = False, call_jobs.invoke(function, args, kwargs,
                                                                   lambda item: self._send_item(item, namespace))
                del function, args, kwargs
                shown = None
                if self.display is not None:
                    # Formatted here, under the cell's state and library options, as the kernel's displayhook would.
                    shown = self.display.format_result(value) if has_value and value is not None else None
                    self.display.after_run()
                saved.settings_changed = library_settings.changed_since(saved.settings_sent)
                saved.interpreter.restore()  # the worker's own code (packing, sending) runs in its own state
                if calls is not None:
                    calls.close()  # every hither call is delivered before the Result
                self.sync_output()
                if call is None:
                    result = self._result(job, namespace, initial, inputs, has_value, value, saved, shown)
                else:
                    result = self._return(value, namespace, inputs, saved)
                # What goes back is packed: the inputs are not needed any more, and a large result is about to be
                # copied out. Let go of them first, so the input, the result and its copy are never all resident.
                del initial, inputs, value, call
                saved.release()
                _unmap(job.closure.buffers)
                self.sender.emit(wire.Result, **result)
        except BaseException as exc:  # noqa: BLE001 - everything the cell raises goes back to the kernel
            if self.display is not None and isinstance(exc, Exception):
                self.display.after_run()  # a failed cell's figures show (and close) too, as in a kernel cell
            saved.interpreter.restore()
            if calls is not None:
                calls.close()
            self.sync_output()
            self._send_error(exc, saved)

    def _namespace(self, job: wire.Job) -> tuple[dict[str, Any], RunInputs, dict[str, Any] | None, list[Any]]:
        """The run's namespace, its inputs, for a call job the function and arguments (see wire.call_values), and
        the run's guards: neither are names of the run, so they never hide a global of the same name."""
        namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__, "get_ipython": _SHELL.get_ipython}

        def failed(name: str, exc: BaseException) -> None:
            # Keep the exception's type (the kernel re-raises it as such) but say which variable and what to do.
            exc.args = (
                f"variable {name!r} could not be rebuilt in the worker: {exc}. Install what it needs where the "
                "cell runs (for Modal: --pip), or build the value inside the cell.",
            )
            raise exc

        sizes: dict[str, int] = {}
        # Notebook functions among the values get this namespace as their globals (and add the globals they read).
        values = job.closure.unpack(on_error=failed, home=namespace, sizes=sizes)
        run_guards = values.pop(wire.GUARDS, [])
        call = None
        if job.header.kind == "call":
            call, values = values, {}
        for name, value in values.items():
            if value is NOT_SENT and name in namespace:  # a shipped function's global: its value wins
                continue
            namespace[name] = importlib.import_module(value.name) if isinstance(value, wire.ModuleRef) else value
        shipped = {n: v for n, v in namespace.items() if n not in ("__name__", "__builtins__", "get_ipython")}
        inputs = RunInputs({**shipped, **(call or {})}, sizes, namespace, references=job.return_known)
        return namespace, inputs, call, run_guards

    def _result(self, job, namespace, initial, inputs, has_value, value, saved, shown=None) -> dict[str, Any]:
        """A cell's Result event, packed. ``shown``: the trailing value's (mimebundle, metadata), formatted where the
        cell ran (display.py)."""
        names, unsendable = _output_names(job, namespace, initial, inputs.changed())
        values = {n: wire.ModuleRef(v.__name__) if isinstance(v, ModuleType) else v for n in names for v in [namespace[n]]}
        packed, options = self._pack_results(values, namespace, inputs, unsendable)
        deleted = tuple(n for n in dict.fromkeys((*job.deleted, *initial)) if n not in namespace and n in initial)
        trailing, bundle, bundle_metadata = None, None, None
        if has_value and value is not None:
            bundle, bundle_metadata = shown if shown is not None else (self._format(value), {})
            trailing, fails = wire.pack_values({"_": value}, **options)
            if fails:
                trailing = None
            if (trailing is not None and self.sender.scrubber.found_in(trailing)) \
                    or self.sender.scrubber.contains(bundle, bundle_metadata):
                # Shown or not, the value would reach the kernel: the same rule as for the names above.
                trailing, bundle, bundle_metadata = None, None, None
                self.sender.emit(wire.Stderr, text="mini_magic: the value of the cell's last expression was not "
                                 "brought back: it holds a secret value (--secret); secrets never leave the worker.\n")
        return dict(outputs=packed, unsendable=unsendable, deleted=deleted, trailing=trailing, trailing_bundle=bundle,
                    trailing_metadata=bundle_metadata, dirty=saved.dirty_reason(), settings=saved.settings_changed)

    def _pack_results(self, values: dict[str, Any], namespace: dict[str, Any], inputs: RunInputs,
                      unsendable: dict[str, str]) -> tuple[wire.PackedValues, dict[str, Any]]:
        """Pack what goes back; a value that cannot (unpicklable, or holding a secret) is left out and its reason
        added to ``unsendable``. Functions the run defined go back to live in the notebook's namespace; unchanged
        inputs as references to the kernel's objects. Returns the packing options too, for the trailing value."""
        options = {"home": namespace, "known": inputs.unchanged_ids(), "changed": inputs.changed_ids(),
                   "arrays": inputs.arrays(), "skip_failures": True}
        packed, failures = wire.pack_values(values, **options)
        if self.sender.scrubber.found_in(packed):
            for name in list(values):
                if self.sender.scrubber.found_in(wire.pack_values({name: values[name]}, **options)[0]):
                    del values[name]
                    unsendable[name] = "it holds a secret value (--secret); secrets never leave the worker"
            packed, failures = wire.pack_values(values, **options)
        for name, failure in failures.items():
            unsendable[name] = f"{type(failure.value).__name__} cannot be pickled: {failure.cause}"
        return packed, options

    def _return(self, value: Any, namespace: dict[str, Any], inputs: RunInputs, saved: _ProcessState) -> dict[str, Any]:
        """A call's Result: its return value under the one name :data:`wire.RETURN` (the cell's path packs it, so
        secrets, unpicklable values and references to the caller's objects follow the rules of a cell's names)."""
        unsendable: dict[str, str] = {}
        packed, _ = self._pack_results({wire.RETURN: value}, namespace, inputs, unsendable)
        return dict(outputs=packed, unsendable=unsendable, deleted=(), dirty=saved.dirty_reason())

    def _send_item(self, item: Any, namespace: dict[str, Any]) -> None:
        """One item a called generator yielded, sent at once; output and hither calls made before it go first. An
        item that cannot travel ends the run with an error: a stream with a hole in it would be silently wrong."""
        self.sync_output()
        packed, failures = wire.pack_values({"item": item}, home=namespace, skip_failures=True)
        if failures:
            cause = failures["item"].cause
            raise TypeError(f"a yielded {type(item).__name__} cannot be sent back: {type(cause).__name__}: {cause}")
        if self.sender.scrubber.found_in(packed):
            raise ValueError("a yielded item holds a secret value (--secret); secrets never leave the worker")
        self.sender.emit(wire.Yield, value=packed)

    def _format(self, value: Any) -> dict[str, Any]:
        if self.display is not None:
            data, _ = self.display.format(value)
            return data
        return {"text/plain": repr(value)}

    def _send_error(self, exc: BaseException, saved: _ProcessState) -> None:
        tb = exc.__traceback__
        while tb is not None and _is_internal(tb):
            tb = tb.tb_next
        exc.__traceback__ = tb
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        packed, failures = wire.pack_values({"exception": exc}, skip_failures=True)
        # An exception object that carries a secret travels only as its (scrubbed) type and message.
        carries_secret = self.sender.scrubber.found_in(packed)
        dirty = saved.dirty_reason()
        if isinstance(exc, (KeyboardInterrupt, SystemExit, MemoryError)):
            dirty = dirty or f"the run ended with {type(exc).__name__}"
        self.sender.emit(
            wire.Error,
            type_module=type(exc).__module__,
            type_qualname=type(exc).__qualname__,
            message=str(exc),
            traceback=text,
            exception=None if failures or carries_secret else packed,
            dirty=dirty,
        )


_SHELL = WorkerShell()



def _unmap(buffers: tuple[Any, ...]) -> None:
    """Unmap the job's large input frames now rather than when the job is dropped; a frame something still uses (a
    result that is a view of an input, a thread the run left running) stays mapped."""
    for buffer in buffers:
        if isinstance(buffer, mmap.mmap):
            try:
                buffer.close()
            except BufferError:
                pass


def _is_internal(tb: TracebackType) -> bool:
    return tb.tb_frame.f_code.co_filename.startswith((_PACKAGE_DIR, _ASYNCIO_DIR))


def _register_sources(job: wire.Job) -> None:
    """So remote tracebacks show source lines: the cell itself, and notebook cells that defined shipped functions."""
    sources = dict(job.linecache)
    cell_text = "\n" * (job.first_line - 1) + job.source
    sources[job.filename] = cell_text
    for filename, text in sources.items():
        linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)


def _compiled(source: str, first_line: int, filename: str, display_trailing: bool) -> tuple[Any, Any]:
    """The cell's code, and its trailing expression's (None if it has none to display).

    Not cached: with a code object reused across runs, the lowest-versions run (Python 3.10) saw an unchanged input
    function come back as changed (tests/kernel/test_call_jobs.py); compiling a cell costs tens of microseconds."""
    tree = ast.parse("\n" * (first_line - 1) + source, filename)
    trailing = None
    if display_trailing and tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body.pop()
        assert isinstance(last, ast.Expr)
        trailing = compile(ast.Expression(last.value), filename, "eval", flags=_FLAGS, dont_inherit=True)
    return compile(tree, filename, "exec", flags=_FLAGS, dont_inherit=True), trailing


_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


def _execute(job: wire.Job, namespace: dict[str, Any]) -> tuple[bool, Any]:
    """Run the cell; return (True, value) when its last statement is an expression to display."""
    body, trailing = _compiled(job.source, job.first_line, job.filename, job.display_trailing)
    loop: asyncio.AbstractEventLoop | None = None

    def evaluate(code: Any) -> Any:
        nonlocal loop
        result = eval(code, namespace)  # noqa: S307 - running the user's cell is the point
        if code.co_flags & inspect.CO_COROUTINE:
            loop = loop or asyncio.new_event_loop()
            result = loop.run_until_complete(result)
        return result

    try:
        evaluate(body)
        if trailing is None:
            return False, None
        return True, evaluate(trailing)
    finally:
        if loop is not None:
            loop.close()


def _output_names(job: wire.Job, namespace: dict[str, Any], initial: dict[str, Any],
                  changed: list[str]) -> tuple[list[str], dict[str, str]]:
    """Which names go back: ``--out`` exactly, or what the analysis found, whatever the run (re)bound, and the
    inputs it changed in place (``changed``, see inputs.py) while the name still holds them."""
    unsendable: dict[str, str] = {}
    if job.outputs is not None:
        names = [n for n in job.outputs if n in namespace]
        for name in job.outputs:
            if name not in namespace:
                unsendable[name] = "it is not defined in the worker after the cell ran"
        return names, unsendable
    names = [n for n in job.candidates if n in namespace]
    names += [n for n in changed if n in namespace and namespace[n] is initial.get(n)]
    for name, value in namespace.items():
        if name in _HIDDEN_NAMES or (name.startswith("__") and name.endswith("__")):
            continue
        if name not in initial or initial[name] is not value:
            names.append(name)
    return list(dict.fromkeys(names)), unsendable


class _ProcessState:
    """What a run may change in the worker process, saved before and restored after it."""

    def __init__(self) -> None:
        self.environ = environ_snapshot()
        self.cwd = os.getcwd()
        self.path = list(sys.path)
        self.threads = set(threading.enumerate())
        self.modules = set(sys.modules)
        self.interpreter = InterpreterState.save()
        self.settings = library_settings.capture()  # the worker's own, before the kernel's are applied
        self.settings_sent: dict[str, Any] = {}
        self.settings_changed: dict[str, Any] = {}
        self.namespace: dict[str, Any] | None = None  # the run's, emptied by release()

    @classmethod
    def save(cls) -> _ProcessState:
        return cls()

    def dirty_reason(self) -> str | None:
        """Why this worker should not run another cell: threads the cell started are still running, or processes
        (running, or ended and never waited for; orphans of the cell's processes are ours too, as a subreaper).
        Recycling the worker ends its whole process tree, so nothing a run started outlives it."""
        leftover = [t.name for t in threading.enumerate() if t not in self.threads and t.is_alive() and not t.daemon]
        if leftover:
            return f"the cell left threads running: {', '.join(leftover[:5])}"
        if proctree.has_children():  # one system call: the /proc walk only when there is something to name
            return f"the cell left processes behind: {proctree.describe(proctree.descendants(os.getpid())[:5])}"
        return self.interpreter.unrestorable()

    def restore(self) -> None:
        if environ_snapshot() != self.environ:
            restore_environ(self.environ)
        try:
            os.chdir(self.cwd)
        except OSError:
            pass
        sys.path[:] = self.path
        self.interpreter.restore()
        library_settings.apply(self.settings, import_missing=False)

    def release(self) -> None:
        """Drop the run's namespace and everything it holds: a function the cell defined keeps the namespace in a
        reference cycle (its ``__globals__``), and so do an error's frames, so without this an idle worker would
        keep the run's inputs resident until a garbage collection happens to run. Not while a thread the run
        started still runs: it may still use the namespace."""
        namespace, self.namespace = self.namespace, None
        if namespace is not None and not any(t.is_alive() for t in threading.enumerate()
                                             if t not in self.threads and not context.is_service_thread(t)):
            namespace.clear()
