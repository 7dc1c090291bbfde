"""The run session with a fake backend, no shell: it takes a built job, whatever built it, and drives it from
submission to its recorded ending (namespace assigned, output in the sink, cancel, progress throttled)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mini_magic import session, wire
from mini_magic.backends.base import Backend, QueuedRunHandle
from mini_magic.errors import RunCancelled
from mini_magic.interrupts import InterruptGate
from mini_magic.jobs import CellContext, JobSpec, build_job
from mini_magic.options import RunOptions
from mini_magic.runs import RunRegistry, RunState
from mini_magic.sinks import ListSink

OPTIONS = RunOptions(backend="fake")


class FakeHandle(QueuedRunHandle):
    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def cancel(self) -> None:
        self.put(wire.Cancelled(seq=99, reason="cancel"))

    kill = cancel


class FakeBackend(Backend):
    """Answers each job with the events ``script(job)`` returns; a script that ends without a terminal event leaves
    the run going until it is cancelled."""

    name = "fake"

    def __init__(self, script: Callable[[wire.Job], list[wire.Event]]) -> None:
        self.script = script
        self.jobs: list[wire.Job] = []

    def submit(self, job: wire.Job, options: RunOptions) -> FakeHandle:
        self.jobs.append(job)
        handle = FakeHandle(job.header.run_id)
        for event in self.script(job):
            handle.put(event)
        return handle


def succeed_with(values: dict[str, Any]) -> Callable[[wire.Job], list[wire.Event]]:
    def script(job: wire.Job) -> list[wire.Event]:
        return [wire.Started(seq=0, run_id=job.header.run_id, pid=1, host="h"), wire.Stdout(seq=1, text="hello\n"),
                wire.Result(seq=2, outputs=wire.pack_values(values)[0], unsendable={}, deleted=())]
    return script


@pytest.fixture
def registry(tmp_path: Path):
    registry = RunRegistry(tmp_path / "runs.db", kernel_id="k")
    yield registry
    registry.close()


def run(build: Callable[[tuple[str, ...]], JobSpec], backend: Backend, registry: RunRegistry,
        sink: ListSink) -> session.RunOutcome:
    return session.run_foreground(build, OPTIONS, backend=backend, registry=registry, sink=sink,
                                  context=CellContext(label="t", widgets=False), show_panel=False)


def test_a_cell_job_and_a_hand_built_job_take_the_same_path(registry: RunRegistry) -> None:
    backend = FakeBackend(succeed_with({"y": 2}))
    cell_namespace: dict[str, Any] = {"x": 1}
    sink = ListSink()
    cell = run(lambda keys: build_job("y = x + 1", cell_namespace, OPTIONS, CellContext(), keys), backend, registry,
               sink)
    other_namespace: dict[str, Any] = {}
    template = backend.jobs[0]
    other = JobSpec(dataclasses.replace(template, header=wire.JobHeader(run_id="other-job", kind="call")), {}, {},
                    other_namespace)
    called = run(lambda keys: other, backend, registry, sink)
    # A call assigns no names: its Result is its return value (here none, as the fake's Result holds no "return").
    assert cell_namespace == {"x": 1, "y": 2} and other_namespace == {} and called.returned is None
    assert cell.record.state is called.record.state is RunState.DONE and called.record.run_id == "other-job"
    assert [kind for kind, _ in sink.outputs] == ["stdout", "stdout"]
    assert session._ACTIVE == {}


def test_a_cancelled_run_raises_assigns_nothing_and_is_recorded(registry: RunRegistry) -> None:
    backend = FakeBackend(lambda job: [wire.Started(seq=0, run_id=job.header.run_id, pid=1, host="h")])
    namespace: dict[str, Any] = {"x": 1}
    spec = build_job("y = x", namespace, OPTIONS, CellContext())
    with InterruptGate() as gate:
        spec = session.prepare_job(lambda keys: spec, OPTIONS, backend=backend, cwd=".", gate=gate)
    active = session.start_run(spec, OPTIONS, backend=backend, registry=registry, sink=ListSink(),
                               context=CellContext())
    assert session.request_cancel(active.run_id) and active.run_id in session._ACTIVE
    terminal, reason = session.drain(active, grace=0.1)
    outcome = session.end_run(active, terminal, reason)
    assert reason == "cancel" and isinstance(outcome.error, RunCancelled)
    assert active.record.state is RunState.CANCELLED and namespace == {"x": 1}
    assert session._ACTIVE == {} and not session.request_cancel(active.run_id)


def test_the_last_progress_count_is_recorded_and_updates_are_throttled(registry: RunRegistry) -> None:
    bars = [wire.Progress(seq=i, bar_id="b", n=i, total=100) for i in range(1, 51)]
    backend = FakeBackend(lambda job: [wire.Started(seq=0, run_id=job.header.run_id, pid=1, host="h"), *bars,
                                       wire.Result(seq=60, outputs=wire.pack_values({})[0], unsendable={}, deleted=())])
    result = run(lambda keys: build_job("pass", {}, OPTIONS, CellContext(), keys), backend, registry, ListSink())
    assert result.record.progress == {"n": 50, "total": 100, "desc": ""}

    backend = FakeBackend(lambda job: [])
    active = session.start_run(build_job("pass", {}, OPTIONS, CellContext()), OPTIONS, backend=backend,
                               registry=registry, sink=ListSink(), context=CellContext(widgets=False))
    updates: list[Any] = []
    registry.subscribe(lambda event, record: updates.append(record.progress) if event == "updated" else None)
    active.progress_recorded = time.monotonic()  # just recorded: the next hour's bars wait
    for event in bars:
        active.record_progress(event, every=3600)
    assert updates == [] and active.record.progress is None
    active.flush_progress()
    assert updates == [{"n": 50, "total": 100, "desc": ""}]
    session.abandon(active, RuntimeError("test over"))
