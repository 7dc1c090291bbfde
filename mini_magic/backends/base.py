"""The backend seam: ``Backend.submit(job, options) -> RunHandle``.

A backend only moves a Job to a worker and events back; the magic, closure capture, result assignment and UI never
know which backend ran a cell. Adding a backend means subclassing :class:`Backend` (and, for a third-party package,
registering it under the ``mini_magic.backends`` entry-point group); nothing else changes.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

from ..options import RunOptions
from ..wire import Event, Job

if TYPE_CHECKING:
    from .._ipykernel import ArgumentGroup


def environment_name(prefix: str, name: str) -> str:
    """``<prefix><NAME>``: a user's name for a volume or secret inside an environment variable's name, spelt the
    same way on every backend (letters and digits upper-cased, anything else ``_``)."""
    return prefix + "".join(c if c.isalnum() else "_" for c in name).upper()


def volume_variable(name: str) -> str:
    """``MINI_MAGIC_VOLUME_<NAME>``: where a volume is mounted, on every backend."""
    return environment_name("MINI_MAGIC_VOLUME_", name)


class RunHandle(ABC):
    """One submitted run, as its backend sees it. Thread-safe: ``cancel`` may come from any thread."""

    run_id: str
    remote_id: str | None = None  # the backend's own id of the run (e.g. a Modal FunctionCall id), for reattach
    # Set by a caller that waits on many runs at once (a ``.map``): a handle that can, sets it when events arrive.
    # One that never does is still drained; its caller then notices new events only at its next poll.
    doorbell: threading.Event | None = None

    @abstractmethod
    def next_events(self, timeout: float) -> list[Event]:
        """Events that arrived, waiting up to ``timeout`` seconds for the first; [] if none came."""

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until events are there, taking none (an interrupt here loses nothing);
        True if there are some."""

    @abstractmethod
    def cancel(self) -> None:
        """Ask the run to stop (a local worker gets SIGINT); a terminal event follows."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the run now, without grace; a terminal event follows."""


class QueuedRunHandle(RunHandle):
    """A handle whose backend threads :meth:`put` events on a local queue, drained by ``next_events``.

    Waiting and taking are separate steps so that the kernel can wait with interrupts let in and take with them
    held: an event is either still queued or returned, never lost in between (see mini_magic.interrupts).
    """

    # How long an event that does not wake the waiter (Event.wakes: Started) may wait for company: a short run's
    # Started and Result are then taken together, and a longer run is shown running this soon.
    QUIET_FOR = 0.02

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._queued: deque[Event] = deque()
        self._waking = 0  # queued events that wake the waiter
        self._quiet_since = 0.0  # when the oldest queued event arrived, if none of them wakes

    def put(self, event: Event) -> None:
        with self._ready:
            if not self._queued:
                self._quiet_since = time.monotonic()
            self._queued.append(event)
            if event.wakes:
                self._waking += 1
            self._ready.notify_all()  # a waiter woken by a quiet event only works out how long it may sleep on
        doorbell = self.doorbell
        if doorbell is not None and event.wakes:
            doorbell.set()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._ready:
            while True:
                now, due = time.monotonic(), deadline
                if self._queued:
                    if self._waking or now >= self._quiet_since + self.QUIET_FOR:
                        return True
                    due = min(deadline, self._quiet_since + self.QUIET_FOR)
                if now >= deadline:
                    return False
                self._ready.wait(due - now)

    def next_events(self, timeout: float) -> list[Event]:
        self.wait(timeout)
        with self._ready:
            events = list(self._queued)
            self._queued.clear()
            self._waking = 0
        return events


class Backend(ABC):
    """Where cells run. One instance per kernel and backend name, created on first use."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    # Seconds between batches of hither calls shipped from the worker: short where events are cheap (local), longer
    # where every batch is a network round trip.
    hither_interval: ClassVar[float] = 0.05

    @classmethod
    def from_config(cls, config: Any, shell: Any = None) -> Backend:
        """Build the kernel's instance from the ``Thither`` configurable (backends read what they need) and the
        shell (e.g. to find objects the notebook defines, like a ``modal.Image`` named by ``--image``)."""
        return cls()

    @classmethod
    def add_arguments(cls, group: ArgumentGroup) -> None:
        """Declare this backend's own ``%%thither`` options (shown in ``%%thither?``)."""

    def prepare(self, options: RunOptions) -> None:
        """Validate options before anything runs (raise ThitherUsageError naming the option); may warn."""

    def secret_keys(self, options: RunOptions, cwd: str) -> tuple[str, ...]:
        """Environment variables that will hold secret values in the worker (their values get scrubbed from
        output). Only the keys: values never enter the Job."""
        return ()

    @abstractmethod
    def submit(self, job: Job, options: RunOptions) -> RunHandle:
        """Start (or queue) the run and return at once."""

    def fan_out(self, options: RunOptions) -> int:
        """How many runs of one ``.map`` to keep submitted at once: further items are submitted as runs end."""
        return 8

    def attach(self, remote_id: str, run_id: str) -> RunHandle:
        """Follow a detached run (``--detach``) that an earlier kernel started, by the backend's own id of it: only
        its result comes back (``%thither attach RUN_ID``). A backend that cannot detach runs keeps this default."""
        from ..errors import ThitherUsageError  # here, not at the top: the local pool imports this package bare

        raise ThitherUsageError(f"%thither attach {run_id}: the {self.name} backend cannot reattach runs.")

    def prewarm(self, options: RunOptions) -> None:
        """Optionally get ready for a run with these options in the background, without blocking. Called at
        ``%load_ext`` on the default backend when ``Thither.prewarm`` is on; a backend that keeps this no-op is not
        even created then."""

    def close(self) -> None:
        """Stop everything this backend started. Idempotent."""
