"""The worker-side call buffer: order, completeness, batching, and dropped calls named."""

from __future__ import annotations

import threading

import numpy as np

from mini_magic import wire, worker_hither
from mini_magic.scrub import Scrubber
from mini_magic.worker_hither import CallBuffer, HitherStub


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[type, dict]] = []
        self.lock = threading.Lock()

    def emit(self, cls: type, **fields: object) -> None:
        with self.lock:
            self.events.append((cls, fields))

    def calls(self) -> list[tuple[str, tuple, dict]]:
        out: list[tuple[str, tuple, dict]] = []
        for cls, fields in self.events:
            if cls is wire.HitherCalls:
                out.extend(fields["calls"].unpack()["calls"])
        return out


def test_stub_calls_arrive_in_order_and_return_none() -> None:
    recorder = Recorder()
    buffer = CallBuffer(recorder.emit, interval=0.005)
    worker_hither.activate(buffer)
    try:
        stub = HitherStub("h-1", "track")
        assert all(stub(i, key=i) is None for i in range(50_000))
    finally:
        worker_hither.activate(None)
        buffer.close()
    calls = recorder.calls()
    assert [args[0] for _, args, _ in calls] == list(range(50_000))
    assert calls[7] == ("h-1", (7,), {"key": 7})
    assert len([e for e in recorder.events if e[0] is wire.HitherCalls]) >= 3  # shipped in several batches


def test_concurrent_appenders_lose_nothing_and_keep_per_thread_order() -> None:
    recorder = Recorder()
    buffer = CallBuffer(recorder.emit, interval=0.001)

    def produce(tag: str) -> None:
        for i in range(20_000):
            buffer.append(tag, (i,), {})

    threads = [threading.Thread(target=produce, args=(f"t{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    buffer.close()
    calls = recorder.calls()
    assert len(calls) == 80_000
    for k in range(4):
        assert [args[0] for tag, args, _ in calls if tag == f"t{k}"] == list(range(20_000))


def test_a_call_that_cannot_be_pickled_is_dropped_and_named() -> None:
    recorder = Recorder()
    buffer = CallBuffer(recorder.emit, interval=10)
    HitherStub("h-2", "plot")  # registers the name used in messages
    buffer.append("h-2", (1,), {})
    buffer.append("h-2", (threading.Lock(),), {})
    buffer.append("h-2", (3,), {})
    buffer.close()
    assert [args[0] for _, args, _ in recorder.calls()] == [1, 3]
    messages = [fields["text"] for cls, fields in recorder.events if cls is wire.Stderr]
    assert len(messages) == 1 and "plot" in messages[0] and "lock" in messages[0]


def test_stubs_outside_a_run_record_nothing() -> None:
    worker_hither.activate(None)
    assert HitherStub("h-3", "idle")(1) is None


def test_a_call_carrying_a_secret_value_is_dropped() -> None:
    recorder = Recorder()
    buffer = CallBuffer(recorder.emit, interval=10)
    buffer.scrubber = Scrubber(["hunter2-very-secret"])
    HitherStub("h-4", "log")
    buffer.append("h-4", ("fine",), {})
    buffer.append("h-4", ("token=hunter2-very-secret",), {})
    buffer.append("h-4", (np.frombuffer(b"hunter2-very-secret", dtype=np.uint8).copy(),), {})  # out-of-band
    buffer.close()
    assert [args[0] for _, args, _ in recorder.calls()] == ["fine"]
    messages = [fields["text"] for cls, fields in recorder.events if cls is wire.Stderr]
    assert len(messages) == 2 and all("log" in m and "secret" in m for m in messages)
    assert not any("hunter2" in m for m in messages)
