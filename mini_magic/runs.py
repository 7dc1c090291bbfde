"""The run registry: one record per ``%%thither`` run, a state machine and observers, persisted to sqlite.

Transitions update an in-memory record and notify observers synchronously; persistence happens on one
background writer thread (run_store.py, which owns the sqlite file), so a foreground cell never waits on disk
(or on another kernel holding the database lock). Several kernels may share one database file.

Every record reaches a terminal state. Each one stores its owner (host, pid and start time of the process
that created it, see owner.py). :meth:`RunRegistry.close` ends the owner's unfinished runs as ``cancelled``
with the reason (the kernel shut down, restarted, unloaded the extension). A kernel that died without closing
(``kill -9``, a crash) cannot do that, so every registry, when it opens (and :meth:`RunRegistry.reconcile` on
demand), marks the unfinished runs of dead owners on its own host as ``failed`` with ``lost: kernel pid N on
HOST died``. Detached runs (``--detach``) are the exception to both: they outlive their kernel by design, so
only their remote call decides how they end (``%thither attach``). Calling :meth:`RunRegistry.start`,
:meth:`~RunRegistry.update` or :meth:`~RunRegistry.finish` on a run of an earlier kernel adopts it into this
registry.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import enum
import heapq
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .owner import Owner
from .run_store import Row, RunStore, WriteBehind, default_path

log = logging.getLogger("mini_magic.runs")

Observer = Callable[[str, "RunRecord"], None]

_ERROR_MAX = 500
_UPDATABLE = frozenset({"label", "remote_id", "worker_pid", "cell_id", "msg_id", "profile", "outputs", "progress"})


class RunState(str, enum.Enum):
    """Lifecycle state of a run; the string values are what the store and the frontend see."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether no further transition is possible from this state."""
        return self in (RunState.DONE, RunState.FAILED, RunState.CANCELLED)


_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.FAILED}),
    RunState.RUNNING: frozenset({RunState.DONE, RunState.FAILED, RunState.CANCELLED}),
}


class RegistryClosed(RuntimeError):
    """A transition reached a registry after :meth:`RunRegistry.close`, which has already ended its runs."""


class InvalidTransition(ValueError):
    """A run was asked to move between two states the state machine does not connect."""

    def __init__(self, run_id: str, from_state: RunState, to_state: RunState, reason: str | None = None) -> None:
        self.run_id, self.from_state, self.to_state = run_id, from_state, to_state
        allowed = ", ".join(sorted(s.value for s in _TRANSITIONS.get(from_state, ()))) or "nothing (terminal)"
        why = reason or f"from {from_state.value} it can go to {allowed}"
        super().__init__(f"run {run_id}: invalid transition {from_state.value} -> {to_state.value} ({why})")


@dataclass
class RunRecord:
    """Everything known about one run. Never holds secret or environment values, only key names."""

    run_id: str
    backend: str
    profile: dict = field(default_factory=dict)
    cell_id: str | None = None
    msg_id: str | None = None
    kernel_id: str | None = None
    label: str | None = None
    state: RunState = RunState.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    outputs: list[str] = field(default_factory=list)
    remote_id: str | None = None
    worker_pid: int | None = None
    background: bool = False
    execution_count: int | None = None
    progress: dict | None = None  # the newest remote tqdm bar: {"n", "total", "desc"}
    owner: Owner | None = None  # the process that created the run; None in records of older versions

    @property
    def detached(self) -> bool:
        """Whether the run was started to outlive its kernel (``--detach``): then only its remote call, never the
        kernel's end, decides how it ends."""
        return self.profile.get("detach") is True

    @property
    def elapsed(self) -> float | None:
        """Seconds spent running so far (or in total once finished); ``None`` if it never started."""
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.started_at)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict with one key per field, ``state`` as its string value."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["state"] = self.state.value
        d["profile"] = _copy_json(self.profile)
        d["outputs"] = list(self.outputs)
        d["progress"] = _copy_json(self.progress)
        d["owner"] = self.owner.to_json() if self.owner is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunRecord:
        """Rebuild a record from :meth:`to_json` output; unknown keys (from newer versions) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["state"] = RunState(kwargs.get("state", RunState.QUEUED))
        kwargs["profile"] = dict(kwargs.get("profile") or {})
        kwargs["outputs"] = list(kwargs.get("outputs") or [])
        kwargs["owner"] = Owner.from_json(kwargs.get("owner"))
        return cls(**kwargs)


def _clone(rec: RunRecord) -> RunRecord:
    # Observers and callers get their own copy so they can never mutate the registry's state. copy.copy, not
    # dataclasses.replace: replace re-runs __init__ and costs several times more, on every transition.
    clone = copy.copy(rec)
    clone.profile, clone.outputs, clone.progress = _copy_json(rec.profile), list(rec.outputs), _copy_json(rec.progress)
    return clone


def _copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data (what profiles and progress hold), without deepcopy's memo bookkeeping."""
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def _json_profile(profile: Any) -> dict:
    # Normalise now: a bad profile must fail in the caller, not later in the writer thread.
    try:
        # allow_nan=False: NaN or infinity would make the record unsendable to frontends (strict JSON).
        normal = json.loads(json.dumps(profile, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"run profile must be a JSON-serialisable dict: {e}") from None
    if not isinstance(normal, dict):
        raise TypeError(f"run profile must be a dict, not {type(profile).__name__}")
    return normal


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None. Records must be strict JSON (frontends get them over a comm), and a
    remote tqdm bar may count towards infinity, its way of saying that the total is unknown."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _one_line(error: str | None) -> str | None:
    if error is None:
        return None
    text = " ".join(str(error).split())
    return text if len(text) <= _ERROR_MAX else text[: _ERROR_MAX - 1] + "…"


class RunRegistry:
    """Thread-safe registry of runs with observers, persisted to sqlite in the background.

    Args:
        path: sqlite file; ``None`` uses :func:`default_path`. Missing directories are created (mode 0700).
        kernel_id: stamped on every record this registry creates.
        owner: the process stamped on every record this registry creates; default: this process. Computed once
            here, so creating a run costs no system call.
        keep: how many finished records the store keeps (newest first); older finished ones are pruned
            on open and on close. Non-terminal records are never pruned: reattach may still need them.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, kernel_id: str | None = None, keep: int = 500,
                 owner: Owner | None = None):
        if keep < 0:
            raise ValueError("keep must be >= 0")
        self.path = Path(path) if path is not None else default_path()
        self._store = RunStore(self.path, keep=keep)
        self.kernel_id = kernel_id
        self.owner = owner if owner is not None else Owner.current()
        self.keep = keep
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # shared with the writer, which snapshots records under it
        self._records: dict[str, RunRecord] = {}
        self._finished_order: collections.deque[str] = collections.deque()
        self._observers: list[tuple[object, Observer]] = []
        self._last_created = 0.0
        self._closed = False
        self._writer: WriteBehind[RunRecord] = WriteBehind(self._store, self._cond, snapshot=_clone, rows=_rows)
        self.reconcile()

    # -- transitions ----------------------------------------------------------------------------------

    def create(
        self, *, backend: str, profile: dict, cell_id: str | None = None, msg_id: str | None = None,
        label: str | None = None, run_id: str | None = None, background: bool = False,
        execution_count: int | None = None,
    ) -> RunRecord:  # fmt: skip
        """Register a new run in state ``QUEUED`` and notify ``"created"``.

        Raises:
            ValueError: ``run_id`` is already used by this registry.
            TypeError: ``profile`` is not JSON-serialisable.
        """
        profile = _json_profile(profile)
        with self._lock:
            self._check_open()
            rid = run_id or uuid.uuid4().hex[:12]
            if rid in self._records or rid in self._writer.pending:
                raise ValueError(f"run id {rid!r} already exists")
            # The wall clock may not advance between two quick creates; recent() orders by created_at,
            # so keep it strictly increasing within this registry.
            self._last_created = max(time.time(), self._last_created + 1e-6)
            rec = RunRecord(
                run_id=rid, backend=backend, profile=profile, cell_id=cell_id, msg_id=msg_id,
                kernel_id=self.kernel_id, label=label, created_at=self._last_created, background=background,
                execution_count=execution_count, owner=self.owner,
            )
            self._records[rid] = rec
            snap, observers = self._changed(rec)
        return self._notify("created", snap, observers)

    def start(self, run_id: str, *, worker_pid: int | None = None, remote_id: str | None = None) -> RunRecord:
        """Move a queued run to ``RUNNING`` and notify ``"started"``.

        Raises:
            KeyError: unknown run id. InvalidTransition: the run is not queued.
        """
        with self._lock:
            self._check_open()
            rec = self._transition(run_id, RunState.RUNNING)
            rec.started_at = time.time()
            rec.worker_pid = worker_pid if worker_pid is not None else rec.worker_pid
            rec.remote_id = remote_id if remote_id is not None else rec.remote_id
            snap, observers = self._changed(rec)
        return self._notify("started", snap, observers)

    def update(self, run_id: str, **fields: Any) -> RunRecord:
        """Change descriptive fields (label, remote_id, worker_pid, cell_id, msg_id, profile, outputs).

        Raises:
            KeyError: unknown run id. ValueError: an attempt to change ``state`` (use start/finish).
            TypeError: any other field name.
        """
        if "state" in fields:
            raise ValueError(f"run {run_id}: update() cannot change state; use start() or finish()")
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(f"run {run_id}: update() cannot set {', '.join(sorted(unknown))}")
        if "profile" in fields:
            fields["profile"] = _json_profile(fields["profile"])
        if "outputs" in fields:
            fields["outputs"] = [str(o) for o in fields["outputs"] or ()]
        if "progress" in fields:
            fields["progress"] = _finite(fields["progress"])
        with self._lock:
            self._check_open()
            rec = self._require(run_id)
            for name, value in fields.items():
                setattr(rec, name, value)
            snap, observers = self._changed(rec)
        return self._notify("updated", snap, observers)

    def finish(
        self, run_id: str, state: RunState, *, error: str | None = None, outputs: list[str] | None = None
    ) -> RunRecord:
        """Move a run to a terminal state and notify ``"finished"``.

        Args:
            state: ``DONE``, ``FAILED`` or ``CANCELLED`` (a queued run cannot become ``DONE``).
            error: ``"Type: message"``; collapsed to one line and truncated to 500 characters.
            outputs: names assigned back into the notebook namespace.

        Raises:
            KeyError: unknown run id. InvalidTransition: not allowed from the current state, or not terminal.
            RegistryClosed: the registry was closed (and has ended the run itself).
        """
        state = RunState(state)
        with self._lock:
            self._check_open()
            snap, observers = self._finish(run_id, state, error, outputs)
        return self._notify("finished", snap, observers)

    def reconcile(self) -> list[RunRecord]:
        """Fail the unfinished runs whose owner died without closing, with ``lost: kernel pid N on HOST died``.

        Only owners on this host are judged (another host's pids mean nothing here, whatever store it shares), and
        never detached runs (their remote call decides). The runs are not adopted: this registry only records
        their end, so its observers (this kernel's panels and frontends) hear nothing of another kernel's runs.
        Runs when the registry opens; cheap enough (one query of the unfinished rows, a few file reads per owner)
        to run again before listing runs. Returns the records it ended.
        """
        verdicts: dict[Owner, bool] = {}
        ended = []
        for rec in self._records_of(self._store.unfinished()):
            owner = rec.owner
            if owner is None or rec.detached:
                continue
            if owner not in verdicts:
                verdicts[owner] = owner.dead_for(self.owner)
            if not verdicts[owner]:
                continue
            with self._lock:
                rid = rec.run_id
                if self._closed or rid in self._records or self._writer.held(rid) is not None:
                    continue  # adopted by this registry (it decides), or already being written
                rec.state, rec.finished_at, rec.error = RunState.FAILED, time.time(), f"lost: {owner} died"
                self._writer.queue(rid, rec)
                ended.append(_clone(rec))
        if ended:
            log.info("run registry: %d run(s) of dead kernels marked failed", len(ended))
        return ended

    # -- queries --------------------------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord | None:
        """Return a copy of the run, looking in memory first, then the store (earlier kernels' runs too)."""
        with self._lock:
            rec = self._records.get(run_id) or self._writer.held(run_id)
            if rec is not None:
                return _clone(rec)
        return next(iter(self._records_of(self._store.one(run_id))), None)

    def recent(self, limit: int = 50, *, kernel_id: str | None = None) -> list[RunRecord]:
        """Return up to ``limit`` runs, newest first, of every kernel or only ``kernel_id``'s."""
        limit = max(0, limit)
        stored = self._records_of(self._store.recent(limit, kernel_id))
        merged = {r.run_id: r for r in stored}
        with self._lock:  # memory wins: the store may lag behind by the writer's queue
            for source in (self._writer.inflight, self._writer.pending, self._records):
                merged.update((k, r) for k, r in source.items() if kernel_id is None or r.kernel_id == kernel_id)
            # Clone only what is returned: memory may hold hundreds of finished runs.
            return [_clone(r) for r in heapq.nlargest(limit, merged.values(), key=lambda r: r.created_at)]

    def active(self) -> list[RunRecord]:
        """Return copies of this registry's non-terminal runs, oldest first."""
        with self._lock:
            return [_clone(r) for r in self._records.values() if not r.state.terminal]

    def subscribe(self, callback: Observer) -> Callable[[], None]:
        """Call ``callback(event, record_copy)`` on every transition; return a function that unsubscribes.

        Events are ``"created"``, ``"started"``, ``"updated"`` and ``"finished"``. Callbacks run in the thread
        that made the transition, in registration order; exceptions are logged and swallowed.
        """
        token = object()
        with self._lock:
            self._observers.append((token, callback))

        def unsubscribe() -> None:
            with self._lock:
                self._observers = [(t, cb) for t, cb in self._observers if t is not token]

        return unsubscribe

    # -- persistence ----------------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> None:
        """Block until every change made before this call is in the database.

        Raises:
            TimeoutError: the writer did not get there within ``timeout`` seconds (e.g. a locked database).
        """
        self._writer.flush(timeout)

    def close(self, reason: str | None = None) -> None:
        """End this registry's unfinished runs, flush, stop the writer, prune and close the database.

        Queued and running runs become ``CANCELLED`` with the error ``cancelled: <reason>`` (e.g. "kernel pid 7 on
        node1 restarted"; default: the owner closed its run registry), except detached ones, which outlive their
        kernel by design. Idempotent; later transitions raise :class:`RegistryClosed`, so a drainer that sees its
        run end only after this (its worker stopped by the backend's close) cannot overwrite the reason.
        """
        why = f"cancelled: {reason or f'{self.owner} closed its run registry'}"
        with self._lock:
            if self._closed:
                return
            self._closed = True
            unfinished = [rid for rid, rec in self._records.items() if not rec.state.terminal and not rec.detached]
            ended = [self._finish(rid, RunState.CANCELLED, why, None) for rid in unfinished]
        for snap, observers in ended:
            self._notify("finished", snap, observers)
        try:
            self.flush()
        except (TimeoutError, RuntimeError) as e:
            log.warning("run registry: closing with unsaved runs: %s", e)
        self._writer.stop()
        self._store.close()

    def __enter__(self) -> RunRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (callers of the underscore methods marked "locked" hold self._lock) ----------------

    def _check_open(self) -> None:  # locked
        if self._closed:
            raise RegistryClosed("run registry is closed")

    def _require(self, run_id: str) -> RunRecord:  # locked
        rec = self._records.get(run_id)
        if rec is None:
            # A run of an earlier kernel (e.g. a detached Modal run being reattached) is adopted.
            found = self._writer.held(run_id)
            # Reading under the lock is acceptable here: adoption is rare and reads do not wait on writers (WAL).
            rec = _clone(found) if found else next(iter(self._records_of(self._store.one(run_id))), None)
            if rec is None:
                raise KeyError(f"unknown run id {run_id!r}")
            self._records[run_id] = rec
        return rec

    def _transition(self, run_id: str, to: RunState) -> RunRecord:  # locked
        rec = self._require(run_id)
        if to not in _TRANSITIONS.get(rec.state, ()):
            raise InvalidTransition(run_id, rec.state, to)
        rec.state = to
        return rec

    def _finish(self, run_id: str, state: RunState, error: str | None, outputs: list[str] | None
                ) -> tuple[RunRecord, list[Observer]]:  # locked
        if not state.terminal:  # finish() must never be a back door to RUNNING
            raise InvalidTransition(run_id, self._require(run_id).state, state, "finish() needs a terminal state")
        rec = self._transition(run_id, state)
        rec.finished_at = time.time()
        rec.error = _one_line(error)
        if outputs is not None:
            rec.outputs = [str(o) for o in outputs]
        self._finished_order.append(run_id)
        changed = self._changed(rec)
        self._trim_memory()
        return changed

    def _changed(self, rec: RunRecord) -> tuple[RunRecord, list[Observer]]:  # locked
        self._writer.queue(rec.run_id, rec)
        return _clone(rec), [cb for _, cb in self._observers]

    def _trim_memory(self) -> None:  # locked
        # Bound memory in long sessions: finished runs beyond `keep` live on in the store (or the write
        # queue, which get() also consults).
        while len(self._finished_order) > self.keep:
            rid = self._finished_order.popleft()
            rec = self._records.get(rid)
            if rec is not None and rec.state.terminal:
                del self._records[rid]

    def _notify(self, event: str, snap: RunRecord, observers: list[Observer]) -> RunRecord:
        for i, cb in enumerate(observers):
            try:
                cb(event, snap if i == 0 else _clone(snap))
            except Exception:
                log.exception("run observer %r failed on %r of run %s", cb, event, snap.run_id)
        return _clone(snap) if observers else snap

    def _records_of(self, stored: list[str]) -> list[RunRecord]:
        out = []
        for data in stored:
            try:
                out.append(RunRecord.from_json(json.loads(data)))
            except (ValueError, TypeError):
                log.warning("run registry: skipping unreadable row in %s", self.path)
        return out


def _rows(records: Iterable[RunRecord]) -> list[Row]:
    return [(r.run_id, r.kernel_id, r.state.value, r.created_at, json.dumps(r.to_json())) for r in records]
