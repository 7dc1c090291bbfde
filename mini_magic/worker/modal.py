"""Container side of the Modal backend: the function Modal runs for every ``%%thither --backend modal`` cell.

It is an importable function of the package (never a serialized closure), so the Job's versioned header is read
and checked before anything of the cell is unpickled. The SAME :class:`~mini_magic.worker.runner.Worker`, set up by
the same :mod:`.bootstrap` as a local worker, runs the job; only the transport differs: events go through one
partition of a ``modal.Queue`` in batches (at most a few ``put_many`` a second, items under Modal's 1 MiB limit),
and the terminal event (Result or Error) is the function's return value, so a detached run can still deliver it.
Standard library and cloudpickle only; the queue is used through its methods. The kernel side (backends/modal.py)
imports :class:`ItemDecoder` from here: the two halves of the queue format live in one file.
"""

from __future__ import annotations

import itertools
import os
import pickle
import threading
from typing import Any

from .. import wire
from ..scrub import Scrubber
from .bootstrap import start_worker
from .runner import Worker
from .shell import default_login_shell

END_OF_RUN = (-1, 0, 1, b"")
ITEM_BYTES = 900_000  # below Modal's 1 MiB per queue item, with room for the item's own framing
FLUSH_INTERVAL = 0.25  # seconds: at most four put_many per second per run


class QueueSender:
    """Batches a run's events into queue items; keeps the terminal event for the return value."""

    def __init__(self, queue: Any, partition: str, interval: float = FLUSH_INTERVAL) -> None:
        self._queue = queue
        self._partition = partition
        self._interval = interval
        self._pending: list[wire.Event] = []
        self._lock = threading.Lock()
        self._batches = itertools.count()
        self._stop = threading.Event()
        self.terminal: wire.Event | None = None
        self._queue_gone = False
        self._thread = threading.Thread(target=self._run, name="mini-magic-queue-sender", daemon=True)
        self._thread.start()

    def send(self, events: list[wire.Event]) -> None:
        with self._lock:
            for event in events:
                if event.terminal:
                    self.terminal = event
                else:
                    self._pending.append(event)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def flush(self, *, final: bool = False) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        items = encode_items(batch, next(self._batches)) if batch else []
        if final:
            items.append(END_OF_RUN)  # tells the reader that every event of the run is in the queue
        if items and not self._queue_gone:
            try:
                self._queue.put_many(items, partition=self._partition)
            except Exception:  # noqa: BLE001 - the kernel that owned the queue is gone (a detached run)
                # Live events have no reader any more; the result still returns through the function call.
                self._queue_gone = True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush(final=True)


def encode_items(events: list[wire.Event], batch: int) -> list[tuple[int, int, int, bytes]]:
    """One pickle per batch, cut into (batch, index, count, chunk) items that each fit in a queue item."""
    data = pickle.dumps(events, protocol=wire.PICKLE_PROTOCOL)
    chunks = [data[i : i + ITEM_BYTES] for i in range(0, len(data), ITEM_BYTES)] or [b""]
    return [(batch, index, len(chunks), chunk) for index, chunk in enumerate(chunks)]


class ItemDecoder:
    """Kernel side of :func:`encode_items`: reassembles batches (items of one partition arrive in order)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.ended = False

    def feed(self, item: tuple[int, int, int, bytes]) -> list[wire.Event]:
        if tuple(item) == END_OF_RUN:
            self.ended = True
            return []
        _batch, index, count, chunk = item
        if index == 0:
            self._chunks = []
        self._chunks.append(chunk)
        if index + 1 < count:
            return []
        data, self._chunks = b"".join(self._chunks), []
        return pickle.loads(data)


class _Container:
    """What a container keeps between runs: the worker that :mod:`.bootstrap` set up, and its scrubber.

    The scrubber gathers the values of every run's secret keys (``Job.secret_keys``: the values of a
    ``modal.Secret`` exist only in this container's environment) and masks them, for the container's whole life,
    in every event and in what goes to the runtime's log.
    """

    def __init__(self) -> None:
        self.scrubber = Scrubber()
        default_login_shell()
        fallback = os.dup(2)  # the runtime's own log stays where Modal collects it
        # Between runs events have no reader: a run connects its queue below.
        self.worker: Worker = start_worker(lambda events: None, self.scrubber, fallback)


_container: _Container | None = None
_container_lock = threading.Lock()


def run_job(frames: list[bytes], queue: Any, partition: str, volumes: list[Any] | None = None) -> bytes:
    """Run one Job in this container; commit its volumes; return the pickled terminal event."""
    global _container
    with _container_lock:
        if _container is None:
            _container = _Container()
        container = _container
        sender = QueueSender(queue, partition)
        events = container.worker.sender
        events.connect(sender.send)  # the one sender the worker, its capture and its display bridge share
        try:
            container.worker.handle([bytes(f) for f in frames])
        finally:
            for volume in volumes or ():
                try:
                    volume.commit()
                except Exception as exc:  # noqa: BLE001 - reported in the cell, the result still comes back
                    events.emit(wire.Stderr, text=f"mini_magic: committing a volume failed: {exc}\n")
            sender.close()
            events.connect(lambda events: None)  # a leftover thread's event must not reach a closed queue
        terminal = sender.terminal or wire.Error(
            seq=0, type_module="builtins", type_qualname="RuntimeError",
            message="the Modal runner ended without a result", traceback="",
        )
        return pickle.dumps(terminal, protocol=wire.PICKLE_PROTOCOL)
