"""The default backend: reusable worker processes on this machine, behind a pool with a size limit.

A run waits as *queued* while every allowed worker is busy; a worker that may have been dirtied (interrupt, crash,
timeout, leftover threads) is never reused, and a fresh one is started in the background instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..errors import ThitherUsageError, warn
from ..local_resources import local_secret, local_volume
from ..wire import Cancelled, Event, Job, Stderr, Stdout, WorkerExited, encode_job
from .base import Backend, QueuedRunHandle, RunOptions
from .workers import WorkerProcess, WorkerProfile, WorkerStartError, private_socket_dir

log = logging.getLogger("mini_magic.local")


@lru_cache(maxsize=1)
def visible_gpus() -> tuple[tuple[str, str], ...]:
    """(index, name) of the NVIDIA GPUs this process may use, honouring CUDA_VISIBLE_DEVICES."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = [tuple(part.strip() for part in line.split(",", 1)) for line in out.splitlines() if "," in line]
    allowed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if allowed is not None:
        keep = [d.strip() for d in allowed.split(",") if d.strip()]
        gpus = [g for g in gpus if g[0] in keep]
    return tuple((i, n) for i, n in gpus)


def gpu_count(spec: str) -> int:
    """``L4`` -> 1, ``A100-80GB:2`` -> 2, ``any`` -> 1."""
    _, _, count = spec.rpartition(":")
    if ":" in spec:
        if not count.isdigit() or int(count) < 1:
            raise ThitherUsageError(f"--gpu {spec!r}: the count after ':' must be a positive integer, e.g. 'L4:2'")
        return int(count)
    return 1


def gpu_environment(spec: str | None) -> dict[str, str]:
    """Environment exposing the requested number of visible GPUs; warns when the request cannot be met here."""
    if not spec:
        return {}
    wanted = gpu_count(spec)
    kind = spec.rpartition(":")[0] if ":" in spec else spec
    gpus = visible_gpus()
    if not gpus:
        warn(
            f"--gpu {spec}: no GPU is visible on this machine (nvidia-smi found none), so the local worker runs on "
            "the CPU. Use a GPU backend (e.g. --backend modal) to get one."
        )
        return {"CUDA_VISIBLE_DEVICES": ""}
    chosen = gpus[:wanted]
    if len(chosen) < wanted:
        warn(f"--gpu {spec}: only {len(chosen)} GPU(s) are visible here; using those.")
    if kind.lower() != "any" and not any(kind.lower() in name.lower() for _, name in chosen):
        names = ", ".join(name for _, name in chosen)
        warn(f"--gpu {spec}: the local GPU is {names}, not {kind}; running there anyway.")
    return {"CUDA_VISIBLE_DEVICES": ",".join(index for index, _ in chosen)}


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
        for worker in reversed(self._idle):
            if worker.profile == profile and worker.alive:
                self._idle.remove(worker)
                return worker
        return None

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
        if cancelled:
            self._release(worker, reusable=True)
            run.deliver([Cancelled(seq=0, reason="cancelled before it started")])
            return
        try:
            worker.send(run.frames)
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


class LocalBackend(Backend):
    name = "local"
    description = "worker processes on this machine; no account needed"
    hither_interval = 0.02

    def __init__(self, *, max_workers: int = 4, prewarm: bool = True) -> None:
        self.pool = WorkerPool(max_workers, prewarm=prewarm)

    @classmethod
    def from_config(cls, config: Any, shell: Any = None) -> LocalBackend:
        return cls(max_workers=config.max_workers, prewarm=config.prewarm)

    def profile(self, options: RunOptions, cwd: str | None = None) -> WorkerProfile:
        """The worker's whole start-up environment: secrets enter here, in the process environment only."""
        environ = {**os.environ, **gpu_environment(options.gpu), **options.env}
        for name, path in options.volumes:
            environ.update(local_volume(name, path, link=False))
        secrets: dict[str, str] = {}
        for name in options.secrets:
            secrets.update(local_secret(name, cwd or os.getcwd()))
        return WorkerProfile.from_env({**environ, **secrets}, secret_keys=tuple(secrets))

    def prepare(self, options: RunOptions) -> None:
        if options.extra.get("detach"):
            raise ThitherUsageError("--detach needs --backend modal: local workers end with the kernel.")
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


__all__ = ["LocalBackend", "LocalRun", "WorkerPool", "gpu_environment", "visible_gpus"]
