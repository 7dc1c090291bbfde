"""The Backend seam's defaults: what a backend that implements only ``submit`` answers to the kernel's other calls;
and QueuedRunHandle, where events wait until the kernel takes them."""

from __future__ import annotations

import threading
import time

import pytest

from mini_magic import wire
from mini_magic.backends.base import Backend, QueuedRunHandle, RunHandle
from mini_magic.errors import ThitherUsageError
from mini_magic.options import RunOptions
from mini_magic.wire import Job


class SubmitOnly(Backend):
    name = "submit-only"

    def submit(self, job: Job, options: RunOptions) -> RunHandle:
        raise AssertionError("not called here")


def test_attach_by_default_refuses_naming_the_backend_and_the_run() -> None:
    with pytest.raises(ThitherUsageError, match=r"attach run1: the submit-only backend cannot reattach runs"):
        SubmitOnly().attach("remote-1", "run1")


def test_prewarm_by_default_does_nothing() -> None:
    assert SubmitOnly().prewarm(RunOptions(backend="submit-only")) is None


class Queued(QueuedRunHandle):
    def cancel(self) -> None:
        pass

    def kill(self) -> None:
        pass


def _started() -> wire.Started:
    return wire.Started(seq=1, run_id="r", pid=1, host="h")


def _stdout() -> wire.Stdout:
    return wire.Stdout(seq=2, text="hello\n")


def test_started_alone_does_not_wake_a_waiter_but_is_taken_when_asked() -> None:
    handle = Queued()
    handle.QUIET_FOR = 60.0  # longer than this test: only the next event or the waiter's own timeout take it
    handle.doorbell = threading.Event()
    handle.put(_started())
    assert not handle.doorbell.is_set()
    assert handle.wait(0.05) is False
    assert [type(e) for e in handle.next_events(0)] == [wire.Started]
    assert handle.next_events(0) == []


def test_started_is_taken_with_the_next_event_at_once() -> None:
    handle = Queued()
    handle.QUIET_FOR = 60.0
    handle.doorbell = threading.Event()
    handle.put(_started())
    threading.Timer(0.05, handle.put, args=(_stdout(),)).start()
    t = time.monotonic()
    assert [type(e) for e in handle.next_events(30)] == [wire.Started, wire.Stdout]
    assert time.monotonic() - t < 20  # woken by the output, not by the 30 s timeout
    assert handle.doorbell.is_set()


def test_started_alone_is_handed_over_once_it_has_waited_quiet_for() -> None:
    handle = Queued()
    handle.QUIET_FOR = 0.01
    handle.put(_started())
    t = time.monotonic()
    assert handle.wait(30) is True
    assert time.monotonic() - t < 20
