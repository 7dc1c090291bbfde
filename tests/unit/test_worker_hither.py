"""The worker-side call buffer: order, completeness, batching, and dropped calls named."""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np

from mini_magic import wire
from mini_magic.scrub import Scrubber
from mini_magic.worker import context
from mini_magic.worker.hither import CallBuffer, HitherStub


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
    try:
        with context.running(context.RunContext("r-1", recorder.emit, buffer)):
            stub = HitherStub("h-1", "track")
            assert all(stub(i, key=i) is None for i in range(50_000))
    finally:
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
    assert context.current() is None
    assert HitherStub("h-3", "idle")(1) is None


def test_a_stub_called_outside_a_run_says_so_once_on_stderr(capsys) -> None:
    stub = HitherStub("h-5", "orphan")
    stub(1)
    stub(2)
    err = capsys.readouterr().err
    assert err.count("orphan") == 1 and "dropped" in err and "no run is active" in err


def test_a_call_after_the_buffer_s_final_flush_is_reported_not_lost_in_silence(capsys) -> None:
    recorder = Recorder()
    buffer = CallBuffer(recorder.emit, interval=10)
    HitherStub("h-6", "late")
    buffer.append("h-6", (1,), {})
    buffer.close()
    buffer.append("h-6", (2,), {})
    assert [args[0] for _, args, _ in recorder.calls()] == [1]
    err = capsys.readouterr().err
    assert "late" in err and "dropped" in err


def test_stubs_called_from_threads_and_executors_reach_the_run() -> None:
    """The current run is process-wide: a thread or an executor the cell starts sees it (a ContextVar would not)."""
    recorder = Recorder()
    buffer = CallBuffer(recorder.emit, interval=0.005)
    stub = HitherStub("h-7", "from_threads")
    try:
        with context.running(context.RunContext("r-2", recorder.emit, buffer)):
            thread = threading.Thread(target=lambda: [stub("thread", i) for i in range(100)])
            thread.start()
            thread.join()
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda i: stub("pool", i), range(100)))
    finally:
        buffer.close()
    calls = recorder.calls()
    assert [args[1] for _, args, _ in calls if args[0] == "thread"] == list(range(100))
    assert sorted(args[1] for _, args, _ in calls if args[0] == "pool") == list(range(100))


def test_one_run_at_a_time() -> None:
    with context.running(context.RunContext("r-3", print)):
        try:
            with context.running(context.RunContext("r-4", print)):
                raise AssertionError("a second run became current while the first was")
        except RuntimeError as exc:
            assert "r-3" in str(exc)
    assert context.current() is None


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
