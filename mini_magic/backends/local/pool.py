"""The local worker pool: reusable worker processes, behind a size limit.

A run waits as *queued* while every allowed worker is busy; a worker that may have been dirtied (interrupt, crash,
timeout, leftover threads) is never reused, and a fresh one is started in the background instead. Workers are
reused only for the same :class:`~.process.WorkerProfile` (the environment a process starts with).

The pool serves any run object that has the attributes of :class:`~.backend.LocalRun` (``profile``, ``cwd``,
``frames``, ``worker``, ``cancel_requested``, ``worker_released``, ``_lock`` and ``deliver``), and starts processes
through :meth:`WorkerPool._spawn`: tests replace it with a fake factory. Standard library and the wire contract only
(no IPython, no GPU probing), so that it can serve from inside a worker too.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from ...wire import Cancelled, Event, Stderr, Stdout, WorkerExited
from .process import WorkerProcess, WorkerProfile, WorkerStartError
from .runtime_dir import private_socket_dir

if TYPE_CHECKING:
    from .backend import LocalRun

log = logging.getLogger("mini_magic.local")


class WorkerPool:
    """At most ``max_workers`` processes (busy + idle + starting); waiting runs are served first come, first
    served. Idle workers of another profile are evicted when a new profile needs room."""

    def __init__(self, max_workers: int, *, prewarm: bool = True) -> None:
        self.max_workers = max(1, max_workers)
        self.prewarm_enabled = prewarm
        self.socket_dir = private_socket_dir()
        self._lock = threading.Lock()
        self._idle: list[WorkerProcess] = []
        self._busy: dict[WorkerProcess, LocalRun] = {}
        self._starting = 0
        self._waiting: deque[LocalRun] = deque()
        self._closed = False

    def _count(self) -> int:
        return len(self._idle) + len(self._busy) + self._starting

    def submit(self, run: LocalRun) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the local backend is closed")
            worker = self._take_idle(run.profile)
            if worker is None and not self._make_room():
                self._waiting.append(run)
                return
            if worker is None:
                self._starting += 1
            else:
                self._busy[worker] = run
        if worker is not None:
            self._start(run, worker)
        else:
            threading.Thread(target=self._spawn_for, args=(run,), name="mini-magic-spawn", daemon=True).start()

    def _take_idle(self, profile: WorkerProfile) -> WorkerProcess | None:
        """The idle worker of this profile that ran a job last: what the previous cells imported is loaded there.
        A worker that never ran one (prewarmed, or started while another took the cell) comes after, however
        recently it became ready."""
        ready = [w for w in self._idle if w.profile == profile and w.alive]
        if not ready:
            return None
        worker = max(ready, key=lambda w: w.jobs_ended)
        self._idle.remove(worker)
        return worker

    def _make_room(self) -> bool:
        if self._count() < self.max_workers:
            return True
        if self._idle:
            oldest = min(self._idle, key=lambda w: w.last_used)
            self._idle.remove(oldest)
            oldest.close()
            return True
        return False

    def _spawn_for(self, run: LocalRun) -> None:
        try:
            worker = self._spawn(run.profile, run.cwd)
        except (WorkerStartError, OSError) as exc:
            with self._lock:
                self._starting -= 1
            run.deliver([WorkerExited(seq=0, returncode=None, log_tail=f"the worker could not start: {exc}")])
            self._serve_waiting()
            return
        with self._lock:
            self._starting -= 1
            self._busy[worker] = run
        self._start(run, worker)

    def _spawn(self, profile: WorkerProfile, cwd: str) -> WorkerProcess:
        return WorkerProcess(profile, socket_dir=self.socket_dir, cwd=cwd, on_events=self._on_events,
                             on_exit=self._on_exit)

    def _start(self, run: LocalRun, worker: WorkerProcess) -> None:
        with run._lock:
            run.worker = worker
            cancelled = run.cancel_requested
        # The run keeps no reference to its frames once they are taken: they hold views of the job's out-of-band
        # buffers (PickleBuffer.raw()), and CPython 3.11 can crash (memoryview release after its PickleBuffer was
        # cleared) when the garbage collector frees such views inside a reference cycle, as an interrupted run's
        # objects can be.
        frames, run.frames = run.frames, []
        if cancelled:
            self._release(worker, reusable=True)
            run.deliver([Cancelled(seq=0, reason="cancelled before it started")])
            return
        try:
            worker.send(frames)
        except OSError:
            worker.kill()  # the reader thread reports the exit to the run

    def _on_events(self, worker: WorkerProcess, events: list[Event]) -> None:
        with self._lock:
            run = self._busy.get(worker)
        if run is None:
            return
        terminal = next((e for e in events if e.terminal), None)
        if terminal is not None:
            # Back in the pool before the run hears it ended, so a cell submitted right after finds it warm; from
            # here on a late cancel of this run must not reach the worker.
            with run._lock:
                run.worker_released = True
                reusable = not getattr(terminal, "dirty", None) and not run.cancel_requested and worker.alive
            self._release(worker, reusable=reusable)
        run.deliver(events)

    def _on_exit(self, worker: WorkerProcess, returncode: int | None, log_tail: str, leftover: tuple[str, str]) -> None:
        with self._lock:
            run = self._busy.pop(worker, None)
            if worker in self._idle:
                self._idle.remove(worker)
        if run is not None:
            stdout, stderr = leftover
            run.deliver([
                *([Stdout(seq=0, text=stdout)] if stdout else []),
                *([Stderr(seq=0, text=stderr)] if stderr else []),
                WorkerExited(seq=0, returncode=returncode, log_tail=log_tail),
            ])
            self._after_recycle(worker.profile, run.cwd)
        self._serve_waiting()

    def _release(self, worker: WorkerProcess, *, reusable: bool) -> None:
        with self._lock:
            run = self._busy.pop(worker, None)
            if reusable and not self._closed:
                worker.jobs_ended = time.monotonic()
                self._idle.append(worker)
        if not reusable:
            worker.close()
            if run is not None:
                self._after_recycle(worker.profile, run.cwd)
        self._serve_waiting()

    def _serve_waiting(self) -> None:
        with self._lock:
            run = self._waiting.popleft() if self._waiting and not self._closed else None
        if run is not None:
            self.submit(run)

    def withdraw(self, run: LocalRun) -> bool:
        """Remove a run that is still waiting; False if it already got (or is getting) a worker."""
        with self._lock:
            try:
                self._waiting.remove(run)
                return True
            except ValueError:
                return False

    def _after_recycle(self, profile: WorkerProfile, cwd: str) -> None:
        if self.prewarm_enabled:
            self.prewarm(profile, cwd)

    def prewarm(self, profile: WorkerProfile, cwd: str) -> None:
        """Start an idle worker for ``profile`` in the background, if there is room and none is idle."""
        with self._lock:
            if self._closed or self._waiting or any(w.profile == profile for w in self._idle):
                return
            if self._count() >= self.max_workers:
                return
            self._starting += 1

        def spawn() -> None:
            try:
                worker = self._spawn(profile, cwd)
            except (WorkerStartError, OSError) as exc:
                log.warning("prewarming a worker failed: %s", exc)
                with self._lock:
                    self._starting -= 1
                return
            with self._lock:
                self._starting -= 1
                if self._closed:
                    worker.close()
                    return
                self._idle.append(worker)
            self._serve_waiting()

        threading.Thread(target=spawn, name="mini-magic-prewarm", daemon=True).start()

    def workers(self) -> list[WorkerProcess]:
        with self._lock:
            return [*self._idle, *self._busy]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = [*self._idle, *self._busy]
            waiting = list(self._waiting)
            self._idle.clear()
            self._waiting.clear()
        for worker in workers:
            worker.close()
        for run in waiting:
            run.deliver([Cancelled(seq=0, reason="the backend was closed")])
        shutil.rmtree(self.socket_dir, ignore_errors=True)


__all__ = ["WorkerPool"]
