"""The run a worker is executing now: the one object the code of a cell reaches for worker services.

Hither stubs (:mod:`.hither`) and mirrored tqdm bars (:mod:`.tqdm_mirror`) are called from the cell's code, from any
thread the cell starts: ``threading.Thread``, a ``concurrent.futures`` executor, a library's own pool. A
``contextvars.ContextVar`` would not do: a new thread starts with an empty context, so a stub called there would
find no run. A worker runs one job at a time, so the current run is process-wide: the runner sets it when a job
starts (:func:`running`) and clears it when the job ends, and every thread sees the same one.

Code that finds no run (a thread the cell left running after its run ended, a stub that came back to the kernel and
is called there) is told so once, on stderr, by :func:`report_outside_run`, instead of losing its call in silence.
Standard library only.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hither import CallBuffer


class RunContext:
    """What one run shares with the code it runs: where its events go and where its hither calls are buffered.

    ``calls`` is None when the job references no hither object (its stubs then have nowhere to go)."""

    def __init__(self, run_id: str, emit: Callable[..., None], calls: CallBuffer | None = None,
                 sync: Callable[[], None] | None = None) -> None:
        self.run_id = run_id
        self.emit = emit
        self.calls = calls
        self._sync = sync

    def sync(self) -> None:
        """Ship what the run printed and the hither calls it made so far, before an event that must follow them
        (a display, a progress bar's update)."""
        if self._sync is not None:
            self._sync()
        else:
            self.flush_calls()

    def flush_calls(self) -> None:
        """Ship the hither calls buffered so far, before an event that must come after them."""
        if self.calls is not None:
            self.calls.flush()


_current: RunContext | None = None
_service_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_worker_process = False
_reported: set[str] = set()
_reported_lock = threading.Lock()


def mark_worker_process() -> None:
    """Called once by :func:`.bootstrap.start_worker`: this process runs jobs (so a ``@thither`` function called
    here runs here, never as a new remote submission)."""
    global _worker_process
    _worker_process = True


def in_worker() -> bool:
    """Whether this process is a mini_magic worker (local process or Modal container), from any thread."""
    return _worker_process


def current() -> RunContext | None:
    """The run in progress in this process, from any thread; None between runs (and in the kernel)."""
    return _current


@contextmanager
def running(context: RunContext) -> Iterator[RunContext]:
    """Make ``context`` the current run for the duration of the block (one run at a time per process)."""
    global _current
    if _current is not None:
        raise RuntimeError(f"run {context.run_id} started while run {_current.run_id} is still current")
    _current = context
    try:
        yield context
    finally:
        _current = None


def report_outside_run(key: str, message: str, *, stream: Any = None) -> None:
    """Say once per ``key`` (a stub, a bar) on stderr that something was dropped because no run is current.

    In a worker, stderr between runs is the worker's log (the cell's capture is off); in the kernel it is the
    notebook's stderr."""
    with _reported_lock:
        if key in _reported:
            return
        _reported.add(key)
    try:
        (stream or sys.stderr).write(f"mini_magic: {message}\n")
    except (OSError, ValueError):
        pass  # a closed stderr must not break the caller


def service_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a daemon thread of mini_magic's own that never runs the cell's code (the tqdm watcher). Started during
    a run, it is not one the run left running: the worker still counts as clean and frees the run's namespace."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    _service_threads.add(thread)
    thread.start()
    return thread


def is_service_thread(thread: threading.Thread) -> bool:
    return thread in _service_threads
