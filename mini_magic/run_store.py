"""The sqlite file behind the run registry: where it lives, its schema, who may read it, and its reads and writes.

The store knows rows, not runs: the registry (runs.py) turns records into rows and back and owns the in-memory
state; :class:`WriteBehind` is the one background thread that carries its changes to the file. Keeping sqlite here
leaves runs.py a state machine with observers, and puts everything that touches the file (its mode, WAL, the busy
timeout, pruning, write retries) in one place.

Several kernels may share one file: each writes its own rows, sqlite's busy timeout serialises the writers and
WAL mode keeps readers unblocked.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

# A child of the registry's logger: who watches "mini_magic.runs" sees the store's complaints too.
log = logging.getLogger("mini_magic.runs.store")

_BUSY_TIMEOUT = 30.0  # seconds sqlite waits on another kernel's lock before a write attempt fails
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, kernel_id TEXT, state TEXT NOT NULL, created_at REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_created_at ON runs (created_at);
"""
_SELECT_ONE = "SELECT data FROM runs WHERE run_id = ?"
_SELECT_UNFINISHED = "SELECT data FROM runs WHERE state IN ('queued', 'running')"
_SELECT_RECENT = "SELECT data FROM runs ORDER BY created_at DESC LIMIT ?"
_SELECT_RECENT_OF = "SELECT data FROM runs WHERE kernel_id = ? ORDER BY created_at DESC LIMIT ?"
_UPSERT = (
    "INSERT INTO runs (run_id, kernel_id, state, created_at, data) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id) DO UPDATE SET kernel_id = excluded.kernel_id, state = excluded.state, "
    "created_at = excluded.created_at, data = excluded.data"
)
_TERMINAL = "('done', 'failed', 'cancelled')"
_PRUNE = (
    f"DELETE FROM runs WHERE state IN {_TERMINAL} AND run_id NOT IN "
    f"(SELECT run_id FROM runs WHERE state IN {_TERMINAL} ORDER BY created_at DESC LIMIT ?)"
)

# One row as stored: run_id, kernel_id, state, created_at and the record's JSON.
Row = tuple[str, "str | None", str, float, str]
R = TypeVar("R")  # the registry's record type (runs.RunRecord); the store never looks inside one


def mini_magic_home() -> Path:
    """Where mini_magic keeps its files on this machine (the run store, local volumes): ``$MINI_MAGIC_HOME``, else
    ``~/.local/share/mini_magic``."""
    home = os.environ.get("MINI_MAGIC_HOME")
    return Path(home).expanduser() if home else Path.home() / ".local" / "share" / "mini_magic"


def default_path() -> Path:
    """Return the default database path: ``$MINI_MAGIC_HOME/runs.sqlite`` or ``~/.local/share/mini_magic/``."""
    return mini_magic_home() / "runs.sqlite"


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


class RunStore:
    """One sqlite file of run rows: a shared reader connection, and :meth:`connect` for the registry's writer.

    Opening creates missing directories (mode 0700) and the file (mode 0600), switches to WAL, creates the schema
    and prunes finished rows beyond ``keep`` (newest first; unfinished rows are never pruned, reattach may still
    need them). Reads come from any thread through one connection serialised by its own lock, so a slow read
    never holds up the registry's transitions; a failed read is logged and answers nothing.
    """

    def __init__(self, path: Path, *, keep: int) -> None:
        self.path = path
        self.keep = keep
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
            os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask
        _make_private(path)
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = self.connect()
        self._reader.execute("PRAGMA journal_mode=WAL")
        self._reader.executescript(_SCHEMA)
        self.prune(self._reader)

    def connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode (transactions are explicit), usable from any thread."""
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    # -- reads: the stored JSON of each matching record ---------------------------------------------------

    def one(self, run_id: str) -> list[str]:
        return self._query(_SELECT_ONE, (run_id,))

    def unfinished(self) -> list[str]:
        return self._query(_SELECT_UNFINISHED, ())

    def recent(self, limit: int, kernel_id: str | None = None) -> list[str]:
        """Newest first, of every kernel or only ``kernel_id``'s."""
        if kernel_id is None:
            return self._query(_SELECT_RECENT, (limit,))
        return self._query(_SELECT_RECENT_OF, (kernel_id, limit))

    def _query(self, sql: str, args: tuple) -> list[str]:
        with self._read_lock:
            if self._reader is None:
                return []
            try:
                return [data for (data,) in self._reader.execute(sql, args).fetchall()]
            except sqlite3.Error:
                log.warning("run registry: read from %s failed", self.path, exc_info=True)
                return []

    # -- writes -------------------------------------------------------------------------------------------

    @staticmethod
    def write(conn: sqlite3.Connection, rows: Iterable[Row]) -> None:
        """Upsert ``rows`` in one transaction. Raises sqlite3.Error (e.g. the busy timeout ran out) for a retry."""
        rows = list(rows)
        conn.execute("BEGIN IMMEDIATE")  # take the write lock up front so the busy timeout applies
        try:
            conn.executemany(_UPSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def prune(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute(_PRUNE, (self.keep,))
        except sqlite3.Error:
            log.warning("run registry: pruning %s failed", self.path, exc_info=True)

    def close(self) -> None:
        """Prune and close the reader; later reads answer nothing. Idempotent."""
        with self._read_lock:
            conn, self._reader = self._reader, None
        if conn is not None:
            try:
                self.prune(conn)
            finally:
                conn.close()


class WriteBehind(Generic[R]):
    """The one background thread that writes changed records to a :class:`RunStore`, so that a transition never
    waits on disk (or on another kernel holding the database lock).

    It shares the registry's condition: the registry mutates live records under that lock, so the writer must
    snapshot them under it too (``snapshot`` copies one), then turns them into rows (``rows``) and writes outside
    it. Repeated changes to one run coalesce in :attr:`pending`; a batch that failed stays in :attr:`inflight` and
    is retried merged with newer changes. The registry reads both (they are newer than the store) while it holds
    the lock; the methods marked "locked" expect it held.
    """

    def __init__(self, store: RunStore, cond: threading.Condition, *, snapshot: Callable[[R], R],
                 rows: Callable[[Iterable[R]], list[Row]]) -> None:
        self._store, self._cond, self._snapshot, self._rows = store, cond, snapshot, rows
        self.pending: dict[str, R] = {}  # live records to write; coalesces repeated updates
        self.inflight: dict[str, R] = {}  # snapshots being written (kept for reads and retries)
        self._queued_seq = 0
        self._written_seq = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name="mini_magic-run-writer", daemon=True)
        self._thread.start()

    def queue(self, run_id: str, record: R) -> None:  # locked
        self.pending[run_id] = record
        self._queued_seq += 1
        self._cond.notify_all()

    def held(self, run_id: str) -> R | None:  # locked
        """The record waiting to be written or being written, if any."""
        return self.pending.get(run_id) or self.inflight.get(run_id)

    def flush(self, timeout: float) -> None:
        """Block until every change queued before this call is in the database.

        Raises:
            TimeoutError: the writer did not get there within ``timeout`` seconds (e.g. a locked database).
            RuntimeError: the writer stopped first.
        """
        with self._cond:
            target = self._queued_seq
            if not self._cond.wait_for(lambda: self._written_seq >= target or not self._thread.is_alive(), timeout):
                raise TimeoutError(f"run registry: writes still pending after {timeout}s ({self._store.path})")
            if self._written_seq < target:
                raise RuntimeError("run registry writer stopped before flushing")

    def stop(self) -> None:
        """Write what is left (giving up after three failed attempts) and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)

    def _main(self) -> None:
        conn = self._store.connect()
        failures = 0
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self.pending or self.inflight or self._stopping)
                    if not self.pending and not self.inflight:
                        return  # stopping with nothing left
                    # Snapshot under the lock, serialise outside it: the hot path only ever waits for a copy.
                    batch = dict(self.inflight)  # leftovers of a failed attempt, overwritten by newer state
                    batch.update((rid, self._snapshot(rec)) for rid, rec in self.pending.items())
                    self.pending.clear()
                    self.inflight = batch
                    target = self._queued_seq
                try:
                    self._store.write(conn, self._rows(batch.values()))
                except sqlite3.Error:  # typically another kernel holding the lock past the busy timeout
                    failures += 1
                    log.warning("run registry: writing %d run(s) failed (%d)", len(batch), failures, exc_info=True)
                    with self._cond:
                        if self._stopping and failures >= 3:
                            log.error("run registry: giving up; %d run(s) not saved", len(self.inflight))
                            return
                        self._cond.wait(timeout=min(0.1 * 2**failures, 5.0))
                    continue  # retry: the batch stays in inflight and merges with newer changes
                except Exception:  # a bug (e.g. an unserialisable value), retrying cannot help
                    log.exception("run registry: dropping %d unwritable run(s)", len(batch))
                failures = 0
                with self._cond:
                    self.inflight = {}
                    self._written_seq = target
                    self._cond.notify_all()
        finally:
            conn.close()
            with self._cond:
                self._cond.notify_all()  # flush() waiters must not outlive the writer
