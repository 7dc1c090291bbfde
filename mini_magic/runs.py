"""The run registry: one record per ``%%thither`` run, a state machine, observers and a sqlite store.

Transitions update an in-memory record and notify observers synchronously; persistence happens on one
background writer thread, so a foreground cell never waits on disk (or on another kernel holding the
database lock). Several kernels may share one database file: each writes its own rows, sqlite's busy
timeout serialises the writers and WAL mode keeps readers unblocked.

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
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .owner import Owner

log = logging.getLogger("mini_magic.runs")

Observer = Callable[[str, "RunRecord"], None]

_BUSY_TIMEOUT = 30.0  # seconds sqlite waits on another kernel's lock before a write attempt fails
_ERROR_MAX = 500
_UPDATABLE = frozenset({"label", "remote_id", "worker_pid", "cell_id", "msg_id", "profile", "outputs", "progress"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, kernel_id TEXT, state TEXT NOT NULL, created_at REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_created_at ON runs (created_at);
"""
_SELECT_ONE = "SELECT data FROM runs WHERE run_id = ?"
_SELECT_UNFINISHED = "SELECT data FROM runs WHERE state IN ('queued', 'running')"
_UPSERT = (
    "INSERT INTO runs (run_id, kernel_id, state, created_at, data) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id) DO UPDATE SET kernel_id = excluded.kernel_id, state = excluded.state, "
    "created_at = excluded.created_at, data = excluded.data"
)


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
        d["profile"] = copy.deepcopy(self.profile)
        d["outputs"] = list(self.outputs)
        d["progress"] = copy.deepcopy(self.progress)
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
    # Observers and callers get their own copy so they can never mutate the registry's state.
    return dataclasses.replace(rec, profile=copy.deepcopy(rec.profile), outputs=list(rec.outputs),
                               progress=copy.deepcopy(rec.progress))


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


def _make_private(path: Path) -> None:
    """Make the store and its ``-wal``/``-shm`` files 0600 whatever the directory's mode and the umask: records
    hold errors and crash logs. sqlite gives the files it creates next to the store the store's own mode, so
    creating the store 0600 first (and tightening files an older version left) is enough."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (str(path), f"{path}-wal", f"{path}-shm"):
        try:
            os.chmod(file, 0o600)
        except FileNotFoundError:
            pass


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


def mini_magic_home() -> Path:
    """Where mini_magic keeps its files on this machine (the run store, local volumes): ``$MINI_MAGIC_HOME``, else
    ``~/.local/share/mini_magic``."""
    home = os.environ.get("MINI_MAGIC_HOME")
    return Path(home).expanduser() if home else Path.home() / ".local" / "share" / "mini_magic"


def default_path() -> Path:
    """Return the default database path: ``$MINI_MAGIC_HOME/runs.sqlite`` or ``~/.local/share/mini_magic/``."""
    return mini_magic_home() / "runs.sqlite"


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
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
            os.chmod(self.path.parent, 0o700)  # mkdir's mode is filtered by the umask
        _make_private(self.path)
        self.kernel_id = kernel_id
        self.owner = owner if owner is not None else Owner.current()
        self.keep = keep
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # wakes the writer and flush() waiters
        self._records: dict[str, RunRecord] = {}
        self._finished_order: collections.deque[str] = collections.deque()
        self._observers: list[tuple[object, Observer]] = []
        self._pending: dict[str, RunRecord] = {}  # live records to write; coalesces repeated updates
        self._inflight: dict[str, RunRecord] = {}  # snapshots being written (kept for get() and retries)
        self._queued_seq = 0
        self._written_seq = 0
        self._last_created = 0.0
        self._closed = False
        self._stopping = False
        # Reads (get/recent) come from any thread; one shared connection, serialised by its own lock so
        # a slow read never holds up transitions.
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = self._connect()
        self._reader.execute("PRAGMA journal_mode=WAL")
        self._reader.executescript(_SCHEMA)
        self._prune(self._reader)
        self._writer = threading.Thread(target=self._writer_main, name="mini_magic-run-writer", daemon=True)
        self._writer.start()
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
            if rid in self._records or rid in self._pending:
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
        for rec in self._query(_SELECT_UNFINISHED, ()):
            owner = rec.owner
            if owner is None or rec.detached:
                continue
            if owner not in verdicts:
                verdicts[owner] = owner.dead_for(self.owner)
            if not verdicts[owner]:
                continue
            with self._lock:
                rid = rec.run_id
                if self._closed or rid in self._records or rid in self._pending or rid in self._inflight:
                    continue  # adopted by this registry (it decides), or already being written
                rec.state, rec.finished_at, rec.error = RunState.FAILED, time.time(), f"lost: {owner} died"
                self._pending[rid] = rec
                self._queued_seq += 1
                self._cond.notify_all()
                ended.append(_clone(rec))
        if ended:
            log.info("run registry: %d run(s) of dead kernels marked failed", len(ended))
        return ended

    # -- queries --------------------------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord | None:
        """Return a copy of the run, looking in memory first, then the store (earlier kernels' runs too)."""
        with self._lock:
            rec = self._records.get(run_id) or self._pending.get(run_id) or self._inflight.get(run_id)
            if rec is not None:
                return _clone(rec)
        return next(iter(self._query(_SELECT_ONE, (run_id,))), None)

    def recent(self, limit: int = 50, *, kernel_id: str | None = None) -> list[RunRecord]:
        """Return up to ``limit`` runs, newest first, of every kernel or only ``kernel_id``'s."""
        limit = max(0, limit)
        if kernel_id is None:
            stored = self._query("SELECT data FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
        else:
            sql = "SELECT data FROM runs WHERE kernel_id = ? ORDER BY created_at DESC LIMIT ?"
            stored = self._query(sql, (kernel_id, limit))
        merged = {r.run_id: r for r in stored}
        with self._lock:  # memory wins: the store may lag behind by the writer's queue
            for source in (self._inflight, self._pending, self._records):
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
        with self._cond:
            target = self._queued_seq
            if not self._cond.wait_for(lambda: self._written_seq >= target or not self._writer.is_alive(), timeout):
                raise TimeoutError(f"run registry: writes still pending after {timeout}s ({self.path})")
            if self._written_seq < target:
                raise RuntimeError("run registry writer stopped before flushing")

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
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._writer.join(timeout=5.0)
        with self._read_lock:
            conn, self._reader = self._reader, None
        if conn is not None:
            try:
                self._prune(conn)
            finally:
                conn.close()

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
            found = self._pending.get(run_id) or self._inflight.get(run_id)
            # Reading under the lock is acceptable here: adoption is rare and reads do not wait on writers (WAL).
            rec = _clone(found) if found else next(iter(self._query(_SELECT_ONE, (run_id,))), None)
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
        self._pending[rec.run_id] = rec
        self._queued_seq += 1
        self._cond.notify_all()
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

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _query(self, sql: str, args: tuple) -> list[RunRecord]:
        with self._read_lock:
            if self._reader is None:
                return []
            try:
                rows = self._reader.execute(sql, args).fetchall()
            except sqlite3.Error:
                log.warning("run registry: read from %s failed", self.path, exc_info=True)
                return []
        out = []
        for (data,) in rows:
            try:
                out.append(RunRecord.from_json(json.loads(data)))
            except (ValueError, TypeError):
                log.warning("run registry: skipping unreadable row in %s", self.path)
        return out

    def _prune(self, conn: sqlite3.Connection) -> None:
        done = "('done', 'failed', 'cancelled')"
        try:
            conn.execute(
                f"DELETE FROM runs WHERE state IN {done} AND run_id NOT IN "
                f"(SELECT run_id FROM runs WHERE state IN {done} ORDER BY created_at DESC LIMIT ?)",
                (self.keep,),
            )
        except sqlite3.Error:
            log.warning("run registry: pruning %s failed", self.path, exc_info=True)

    def _writer_main(self) -> None:
        conn = self._connect()
        failures = 0
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._pending or self._inflight or self._stopping)
                    if not self._pending and not self._inflight:
                        return  # stopping with nothing left
                    # Snapshot under the lock, serialise outside it: the hot path only ever waits for a copy.
                    batch = dict(self._inflight)  # leftovers of a failed attempt, overwritten by newer state
                    batch.update((rid, _clone(rec)) for rid, rec in self._pending.items())
                    self._pending.clear()
                    self._inflight = batch
                    target = self._queued_seq
                try:
                    self._write(conn, batch.values())
                except sqlite3.Error:  # typically another kernel holding the lock past the busy timeout
                    failures += 1
                    log.warning("run registry: writing %d run(s) failed (%d)", len(batch), failures, exc_info=True)
                    with self._cond:
                        if self._stopping and failures >= 3:
                            log.error("run registry: giving up; %d run(s) not saved", len(self._inflight))
                            return
                        self._cond.wait(timeout=min(0.1 * 2**failures, 5.0))
                    continue  # retry: the batch stays in _inflight and merges with newer changes
                except Exception:  # a bug (e.g. an unserialisable value), retrying cannot help
                    log.exception("run registry: dropping %d unwritable run(s)", len(batch))
                failures = 0
                with self._cond:
                    self._inflight = {}
                    self._written_seq = target
                    self._cond.notify_all()
        finally:
            conn.close()
            with self._cond:
                self._cond.notify_all()  # flush() waiters must not outlive the writer

    @staticmethod
    def _write(conn: sqlite3.Connection, records: Iterable[RunRecord]) -> None:
        rows = [(r.run_id, r.kernel_id, r.state.value, r.created_at, json.dumps(r.to_json())) for r in records]
        conn.execute("BEGIN IMMEDIATE")  # take the write lock up front so the busy timeout applies
        try:
            conn.executemany(_UPSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
