"""The default backend: reusable worker processes on this machine (see pool.py), one :class:`LocalRun` per job.

What a run's options become here: the worker profile (environment, ``--gpu`` through gpus.py, ``--volume`` and
``--secret`` through resources.py), and ``--detach`` refused (local workers end with their kernel).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from ...options import RunOptions
from ...wire import Cancelled, Event, Job, encode_job
from ...worker.state import environ_snapshot
from ..base import Backend, QueuedRunHandle
from .gpus import gpu_count, gpu_environment
from .pool import WorkerPool
from .process import WorkerProcess, WorkerProfile
from .resources import local_secret, local_volume


class LocalRun(QueuedRunHandle):
    def __init__(self, pool: WorkerPool, job: Job, profile: WorkerProfile, cwd: str) -> None:
        super().__init__()
        self.run_id = job.header.run_id
        self.frames = encode_job(job)
        self.profile = profile
        self.cwd = cwd
        self._pool = pool
        self._lock = threading.Lock()
        self.worker: WorkerProcess | None = None
        self.worker_released = False  # the worker went back to the pool: this run may no longer signal it
        self.cancel_requested = False
        self.finished = False

    def deliver(self, events: list[Event]) -> None:
        for event in events:
            if event.terminal:
                with self._lock:
                    if self.finished:
                        return
                    self.finished = True
                    self.frames = []  # never sent (cancelled while queued): see WorkerPool._start
            self.put(event)

    def cancel(self) -> None:
        self._stop(WorkerProcess.interrupt)

    def kill(self) -> None:
        self._stop(WorkerProcess.kill)

    def _stop(self, signal_worker: Callable[[WorkerProcess], None]) -> None:
        """Signal the worker running this run; a run still waiting for one just leaves the queue. A run that has
        ended owns no worker any more (it may be serving another run): nothing is signalled."""
        with self._lock:
            if self.finished or self.worker_released:
                return
            self.cancel_requested = True
            worker = self.worker
        if worker is not None:
            signal_worker(worker)
        elif self._pool.withdraw(self):
            self.deliver([Cancelled(seq=0, reason="cancelled while queued")])


class LocalBackend(Backend):
    name = "local"
    description = "worker processes on this machine; no account needed"
    hither_interval = 0.02

    def __init__(self, *, max_workers: int = 4, prewarm: bool = True) -> None:
        self.pool = WorkerPool(max_workers, prewarm=prewarm)
        self._profiles: dict[Any, tuple[dict[Any, Any], WorkerProfile]] = {}  # see profile()

    @classmethod
    def from_config(cls, config: Any, shell: Any = None) -> LocalBackend:
        return cls(max_workers=config.max_workers, prewarm=config.prewarm)

    def fan_out(self, options: RunOptions) -> int:
        """One run per worker process the pool may have: more would only wait in the pool's queue."""
        return self.pool.max_workers

    def profile(self, options: RunOptions, cwd: str | None = None) -> WorkerProfile:
        """The worker's whole start-up environment: secrets enter here, in the process environment only.

        Without volumes or secrets (whose files are read each time) the profile is reused while the kernel's
        environment and the run's GPU and ``--env`` are unchanged: building it decodes and sorts the whole
        environment, a large share of a warm trivial cell's cost here."""
        if options.volumes or options.secrets:
            return self._profile(options, cwd)
        key = (options.gpu, tuple(sorted(options.env.items())))
        environ = environ_snapshot()
        cached = self._profiles.get(key)
        if cached is not None and cached[0] == environ:
            return cached[1]
        profile = self._profile(options, cwd)
        if len(self._profiles) > 16:
            self._profiles.clear()
        self._profiles[key] = (environ, profile)
        return profile

    def _profile(self, options: RunOptions, cwd: str | None) -> WorkerProfile:
        environ = {**os.environ, **gpu_environment(options.gpu), **options.env}
        for name, path in options.volumes:
            environ.update(local_volume(name, path, link=False))
        secrets: dict[str, str] = {}
        for name in options.secrets:
            secrets.update(local_secret(name, cwd or os.getcwd()))
        return WorkerProfile.from_env({**environ, **secrets}, secret_keys=tuple(secrets))

    def prepare(self, options: RunOptions) -> None:
        if options.gpu:
            gpu_count(options.gpu)
        for name, path in options.volumes:
            local_volume(name, path)  # creates and links (or warns) once per cell
        for name in options.secrets:
            local_secret(name, os.getcwd())  # a missing secret is an error before anything runs

    def secret_keys(self, options: RunOptions, cwd: str) -> tuple[str, ...]:
        return tuple(key for name in options.secrets for key in local_secret(name, cwd))

    def submit(self, job: Job, options: RunOptions) -> LocalRun:
        run = LocalRun(self.pool, job, self.profile(options, job.cwd), job.cwd or os.getcwd())
        self.pool.submit(run)
        return run

    def prewarm(self, options: RunOptions) -> None:
        self.pool.prewarm(self.profile(options), os.getcwd())

    def close(self) -> None:
        self.pool.close()


__all__ = ["LocalBackend", "LocalRun"]
