"""Kernel side: hold interrupts off the steps of a run that must never be left half-done.

A Jupyter interrupt is a SIGINT, which Python turns into ``KeyboardInterrupt`` at whatever bytecode the main thread
is executing: in the middle of sending a job to a worker (which then waits forever for the rest of its frames), of
creating the run's record while an observer sends (a record ``queued`` forever), of taking events off the run's
queue (a lost terminal event hangs the cell), of assigning results (half the names assigned). Catching
``KeyboardInterrupt`` around those steps cannot help: it may land one bytecode before the ``try`` or inside the
``except``. So a foreground run holds SIGINT in an :class:`InterruptGate` and lets it in only where the run can act
on it: while it waits for the worker's events or runs a callback, where it becomes a cancel of the run.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class InterruptGate:
    """While the gate is closed a SIGINT is held; :meth:`open` raises a held one as ``KeyboardInterrupt``, and while
    open a SIGINT raises at once, closing the gate in the same step (so the ``except`` that handles it runs with
    interrupts held). Leaving the ``with`` block raises an interrupt still held, once the block has completed.

    The gate starts closed and every region that opens it closes it in a ``finally``: so the gate is closed while
    its handler is being installed and removed, and an interrupt can never land between installing the handler and
    the block, or inside ``__exit__`` before the previous handler is back. Off the main thread (a background run's
    drainer, a kernel subshell) no SIGINT is ever delivered, and the gate does nothing.
    """

    def __init__(self) -> None:
        self.held = False
        self._open = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> InterruptGate:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            try:
                signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:  # not the main interpreter
                return self
            self._previous = previous
            self._installed = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._open = False
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
        if self.held and exc_type is None:
            self.held = False
            self._deliver(None)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if not self._open:
            self.held = True
            return
        self._open = False
        self._deliver(frame)

    def _deliver(self, frame: FrameType | None) -> None:
        """Do what the handler we replaced would have done (in a kernel: raise KeyboardInterrupt)."""
        previous = self._previous
        if callable(previous):
            previous(signal.SIGINT, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    def open(self) -> None:
        """Let interrupts in (first one held while closed). Pair with :meth:`close` in a ``finally``."""
        if self.held:
            self.held = False
            self._deliver(None)
        self._open = True

    def close(self) -> None:
        self._open = False

    def take_held(self) -> bool:
        """Whether an interrupt is held, which the caller now handles itself (e.g. by cancelling the run it has
        just started): it will not be raised."""
        held, self.held = self.held, False
        return held
