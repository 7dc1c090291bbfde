"""The local worker pool's logic with fake processes: reuse by profile, the size limit, queueing, recycling.

No worker process, no GPU, no nvidia-smi: the pool starts processes through ``WorkerPool._spawn``, replaced here by
a factory of fakes. (tests/kernel/test_processes.py covers the same pool with real processes under a kernel.)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest

from mini_magic import wire
from mini_magic.backends.local.pool import WorkerPool
from mini_magic.backends.local.process import WorkerProfile
from tests.polling import wait_until

P = WorkerProfile.from_env({"PROFILE": "p"})
Q = WorkerProfile.from_env({"PROFILE": "q"})


class FakeProcess:
    def __init__(self, profile: WorkerProfile, number: int) -> None:
        self.profile = profile
        self.number = number
        self.alive = True
        self.last_used = float(number)
        self.jobs_ended = 0.0
        self.sent: list[Any] = []

    def send(self, frames: Any) -> None:
        self.sent.append(frames)

    def close(self) -> None:
        self.alive = False

    kill = interrupt = close

    def __repr__(self) -> str:
        return f"<fake worker {self.number}>"


@dataclass(frozen=True)
class Ended:
    """A terminal event: Result or Error, ``dirty`` when the worker must not be reused."""

    dirty: str | None = None
    terminal: bool = True


class FakeRun:
    """What the pool reads and writes on a run (LocalRun's attributes), with its events recorded."""

    def __init__(self, profile: WorkerProfile, name: str) -> None:
        self.profile = profile
        self.cwd = "/"
        self.frames = [name.encode()]
        self.job_frames = self.frames  # what the pool must send (it takes run.frames away when it does)
        self._lock = threading.Lock()
        self.worker: FakeProcess | None = None
        self.cancel_requested = False
        self.worker_released = False
        self.events: list[Any] = []

    def deliver(self, events: list[Any]) -> None:
        self.events.extend(events)


class FakePool(WorkerPool):
    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers, prewarm=False)
        self.spawned: list[FakeProcess] = []

    def _spawn(self, profile: WorkerProfile, cwd: str) -> Any:
        process = FakeProcess(profile, len(self.spawned) + 1)
        self.spawned.append(process)
        return process

    def started(self, run: FakeRun) -> FakeProcess:
        assert wait_until(lambda: run.worker is not None and run.job_frames in run.worker.sent), "the run never started"
        assert run.worker is not None
        return run.worker

    def end(self, run: FakeRun, dirty: str | None = None) -> None:
        assert run.worker is not None
        self._on_events(run.worker, [Ended(dirty)])


@pytest.fixture
def pool():
    made: list[FakePool] = []

    def make(max_workers: int = 2) -> FakePool:
        made.append(FakePool(max_workers))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_a_finished_worker_is_reused_for_the_same_profile(pool) -> None:
    p = pool()
    first = FakeRun(P, "a")
    p.submit(first)
    worker = p.started(first)
    p.end(first)
    assert first.events == [Ended()] and first.worker_released
    second = FakeRun(P, "b")
    p.submit(second)
    assert p.started(second) is worker and len(p.spawned) == 1


def test_a_dirty_worker_is_closed_and_the_next_run_gets_a_fresh_one(pool) -> None:
    p = pool()
    first = FakeRun(P, "a")
    p.submit(first)
    worker = p.started(first)
    p.end(first, dirty="the cell left threads running")
    assert not worker.alive
    second = FakeRun(P, "b")
    p.submit(second)
    assert p.started(second) is not worker and len(p.spawned) == 2


def test_another_profile_evicts_the_oldest_idle_worker_when_the_pool_is_full(pool) -> None:
    p = pool(max_workers=1)
    first = FakeRun(P, "a")
    p.submit(first)
    worker = p.started(first)
    p.end(first)
    other = FakeRun(Q, "b")
    p.submit(other)
    assert p.started(other).profile == Q
    assert not worker.alive and p.workers() == [other.worker]


def test_runs_wait_first_come_first_served_while_every_worker_is_busy(pool) -> None:
    p = pool(max_workers=1)
    first, second, third = FakeRun(P, "a"), FakeRun(P, "b"), FakeRun(P, "c")
    p.submit(first)
    worker = p.started(first)
    p.submit(second)
    p.submit(third)
    assert second.worker is None and third.worker is None  # queued
    p.end(first)
    assert p.started(second) is worker and third.worker is None
    p.end(second)
    assert p.started(third) is worker and len(p.spawned) == 1


def test_a_waiting_run_can_be_withdrawn_and_closing_cancels_the_rest(pool) -> None:
    p = pool(max_workers=1)
    first, second, third = FakeRun(P, "a"), FakeRun(P, "b"), FakeRun(P, "c")
    p.submit(first)
    p.started(first)
    p.submit(second)
    p.submit(third)
    assert p.withdraw(second) and not p.withdraw(second)
    p.close()
    assert [type(e) for e in third.events] == [wire.Cancelled] and second.events == []
    assert not first.worker.alive


def test_a_started_run_keeps_no_reference_to_its_frames(pool) -> None:
    """They hold views of the job's out-of-band buffers: freed with the send, never by the collector in a cycle."""
    p = pool()
    run = FakeRun(P, "a")
    p.submit(run)
    p.started(run)
    assert run.frames == []


def test_the_worker_that_ran_last_is_preferred_over_one_that_became_ready_later(pool) -> None:
    """A prewarmed worker that connects while a cell runs on another must not take the next cell: the worker that
    ran the previous cells has their imports loaded."""
    p = pool(max_workers=3)
    first = FakeRun(P, "a")
    p.submit(first)
    warm = p.started(first)
    p.end(first)
    late = FakeProcess(P, 99)  # became ready after the warm worker went back to the pool
    with p._lock:
        p._idle.append(late)
    second = FakeRun(P, "b")
    p.submit(second)
    assert p.started(second) is warm
