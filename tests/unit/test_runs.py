"""Unit tests for mini_magic.runs: state machine, observers, sqlite persistence, threads, pruning."""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mini_magic.runs import InvalidTransition, RegistryClosed, RunRecord, RunRegistry, RunState

PROFILE = {"gpu": "L4", "timeout": 3600, "env_keys": ["HF_TOKEN"]}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "runs.sqlite"


@pytest.fixture
def reg(db: Path):
    registry = RunRegistry(db, kernel_id="k1")
    yield registry
    registry.close()


def raw_rows(db: Path) -> dict[str, dict]:
    conn = sqlite3.connect(db)
    try:
        return {rid: json.loads(data) for rid, data in conn.execute("SELECT run_id, data FROM runs")}
    finally:
        conn.close()


# -- state machine ---------------------------------------------------------------------------------------


def test_valid_lifecycle(reg: RunRegistry) -> None:
    rec = reg.create(backend="local", profile=PROFILE, cell_id="c1", msg_id="m1", label="x = 1")
    assert rec.state is RunState.QUEUED and rec.kernel_id == "k1" and len(rec.run_id) == 12
    assert rec.started_at is None and rec.finished_at is None
    rec = reg.start(rec.run_id, worker_pid=123)
    assert rec.state is RunState.RUNNING and rec.worker_pid == 123 and rec.started_at is not None
    rec = reg.finish(rec.run_id, RunState.DONE, outputs=["y", "z"])
    assert rec.state is RunState.DONE and rec.outputs == ["y", "z"] and rec.finished_at >= rec.started_at
    assert reg.active() == []


@pytest.mark.parametrize("end", [RunState.FAILED, RunState.CANCELLED])
def test_queued_can_fail_or_be_cancelled(reg: RunRegistry, end: RunState) -> None:
    rid = reg.create(backend="local", profile={}).run_id
    assert reg.finish(rid, end, error="boom").state is end


def test_state_terminal_property() -> None:
    assert {s for s in RunState if s.terminal} == {RunState.DONE, RunState.FAILED, RunState.CANCELLED}
    assert RunState("running") is RunState.RUNNING and RunState.DONE == "done"


def _in_state(reg: RunRegistry, state: RunState) -> str:
    rid = reg.create(backend="local", profile={}).run_id
    if state is RunState.QUEUED:
        return rid
    if state is RunState.RUNNING:
        reg.start(rid)
        return rid
    if state is not RunState.DONE:
        return reg.finish(rid, state).run_id
    reg.start(rid)
    return reg.finish(rid, RunState.DONE).run_id


ALLOWED = {
    (RunState.QUEUED, RunState.RUNNING),
    (RunState.QUEUED, RunState.CANCELLED),
    (RunState.QUEUED, RunState.FAILED),
    (RunState.RUNNING, RunState.DONE),
    (RunState.RUNNING, RunState.FAILED),
    (RunState.RUNNING, RunState.CANCELLED),
}
INVALID = [(a, b) for a in RunState for b in RunState if b is not RunState.QUEUED and (a, b) not in ALLOWED]


@pytest.mark.parametrize(("src", "dst"), INVALID, ids=[f"{a.value}->{b.value}" for a, b in INVALID])
def test_every_invalid_transition_raises(reg: RunRegistry, src: RunState, dst: RunState) -> None:
    rid = _in_state(reg, src)
    before = reg.get(rid)
    with pytest.raises(InvalidTransition) as info:
        if dst is RunState.RUNNING:
            reg.start(rid)
        else:
            reg.finish(rid, dst)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.run_id, err.from_state, err.to_state) == (rid, src, dst)
    assert rid in str(err) and f"{src.value} -> {dst.value}" in str(err)
    assert reg.get(rid) == before  # nothing changed


def test_finish_rejects_non_terminal_state(reg: RunRegistry) -> None:
    rid = reg.create(backend="local", profile={}).run_id
    with pytest.raises(InvalidTransition, match="terminal"):
        reg.finish(rid, RunState.RUNNING)
    assert reg.get(rid).state is RunState.QUEUED


def test_unknown_run_and_duplicate_id(reg: RunRegistry) -> None:
    with pytest.raises(KeyError):
        reg.start("nope")
    reg.create(backend="local", profile={}, run_id="fixed")
    with pytest.raises(ValueError, match="already exists"):
        reg.create(backend="local", profile={}, run_id="fixed")


def test_update_fields_but_not_state(reg: RunRegistry) -> None:
    rid = reg.create(backend="modal", profile={}).run_id
    rec = reg.update(rid, remote_id="fc-123", label="train")
    assert (rec.remote_id, rec.label, rec.state) == ("fc-123", "train", RunState.QUEUED)
    with pytest.raises(ValueError, match="state"):
        reg.update(rid, state=RunState.RUNNING)
    with pytest.raises(TypeError, match="created_at"):
        reg.update(rid, created_at=0.0)
    assert reg.get(rid).state is RunState.QUEUED


def test_profile_must_be_json(reg: RunRegistry) -> None:
    with pytest.raises(TypeError, match="JSON"):
        reg.create(backend="local", profile={"bad": object()})


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_profile_must_be_strict_json(reg: RunRegistry, number: float) -> None:
    # The status comm sends records as strict JSON: a NaN timeout once made a run impossible to show.
    with pytest.raises(TypeError, match="JSON"):
        reg.create(backend="local", profile={"timeout": number})


def test_progress_of_an_endless_bar_is_kept_as_strict_json(reg: RunRegistry) -> None:
    rid = _in_state(reg, RunState.RUNNING)
    rec = reg.update(rid, progress={"n": 3.0, "total": float("inf"), "desc": "stream"})  # tqdm(total=inf)
    assert rec.progress == {"n": 3.0, "total": None, "desc": "stream"}
    json.dumps(rec.to_json(), allow_nan=False)  # what the status comm sends


def test_error_is_one_line_and_truncated(reg: RunRegistry) -> None:
    rid = _in_state(reg, RunState.RUNNING)
    rec = reg.finish(rid, RunState.FAILED, error="ValueError: " + "x\n" * 1000)
    assert "\n" not in rec.error and len(rec.error) == 500 and rec.error.startswith("ValueError: x x")


def test_elapsed(reg: RunRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("mini_magic.runs.time.time", lambda: clock[0])
    rid = reg.create(backend="local", profile={}).run_id
    assert reg.get(rid).elapsed is None
    reg.start(rid)
    clock[0] += 2.5
    assert reg.get(rid).elapsed == pytest.approx(2.5)
    clock[0] += 1.0
    reg.finish(rid, RunState.DONE)
    clock[0] += 100.0  # a finished run's elapsed no longer grows
    assert reg.get(rid).elapsed == pytest.approx(3.5)
    cancelled = reg.create(backend="local", profile={}).run_id
    assert reg.finish(cancelled, RunState.CANCELLED).elapsed is None  # never started


# -- observers -------------------------------------------------------------------------------------------


def test_observers_order_events_and_copies(reg: RunRegistry) -> None:
    seen: list[tuple[str, str, RunState]] = []
    received: list[RunRecord] = []

    def first(event: str, rec: RunRecord) -> None:
        seen.append(("first", event, rec.state))
        received.append(rec)
        rec.outputs.append("mutated")  # must not leak into the registry or other observers
        rec.profile["gpu"] = "mutated"

    def second(event: str, rec: RunRecord) -> None:
        seen.append(("second", event, rec.state))
        assert rec.outputs == [] or rec.outputs == ["a"]
        assert rec.profile["gpu"] == "L4"

    reg.subscribe(first)
    reg.subscribe(second)
    rid = reg.create(backend="local", profile=PROFILE).run_id
    reg.start(rid)
    reg.update(rid, label="l")
    reg.finish(rid, RunState.DONE, outputs=["a"])
    assert seen == [
        ("first", "created", RunState.QUEUED),
        ("second", "created", RunState.QUEUED),
        ("first", "started", RunState.RUNNING),
        ("second", "started", RunState.RUNNING),
        ("first", "updated", RunState.RUNNING),
        ("second", "updated", RunState.RUNNING),
        ("first", "finished", RunState.DONE),
        ("second", "finished", RunState.DONE),
    ]
    assert received[0].state is RunState.QUEUED  # a snapshot, not the live record
    final = reg.get(rid)
    assert final.outputs == ["a"] and final.profile == PROFILE


def test_raising_observer_is_logged_and_others_run(reg: RunRegistry, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def bad(event: str, rec: RunRecord) -> None:
        raise RuntimeError("observer bug")

    reg.subscribe(bad)
    reg.subscribe(lambda event, rec: calls.append(event))
    with caplog.at_level(logging.ERROR, logger="mini_magic.runs"):
        rec = reg.create(backend="local", profile={})
    assert calls == ["created"] and rec.state is RunState.QUEUED
    assert rec.run_id in caplog.text and "observer bug" in caplog.text


def test_unsubscribe(reg: RunRegistry) -> None:
    calls: list[str] = []
    cb = lambda event, rec: calls.append(event)  # noqa: E731
    unsubscribe = reg.subscribe(cb)
    other = reg.subscribe(cb)  # the same callable twice: each subscription is separate
    rid = reg.create(backend="local", profile={}).run_id
    unsubscribe()
    unsubscribe()  # idempotent
    reg.start(rid)
    other()
    reg.finish(rid, RunState.DONE)
    assert calls == ["created", "created", "started"]


def test_observer_may_call_back_into_registry(reg: RunRegistry) -> None:
    def relabel(event: str, rec: RunRecord) -> None:
        if event == "created":
            reg.update(rec.run_id, label="from observer")  # would deadlock if called under the lock

    reg.subscribe(relabel)
    rid = reg.create(backend="local", profile={}).run_id
    assert reg.get(rid).label == "from observer"


# -- persistence -----------------------------------------------------------------------------------------


def test_reopen_restores_every_field(db: Path) -> None:
    reg = RunRegistry(db, kernel_id="k1")
    rec = reg.create(backend="modal", profile=PROFILE, cell_id="c", msg_id="m", label="lbl")
    reg.start(rec.run_id, worker_pid=42, remote_id="fc-1")
    final = reg.finish(rec.run_id, RunState.FAILED, error="KeyError: 'a'", outputs=["o"])
    queued = reg.create(backend="local", profile={})
    reg.close()

    reopened = RunRegistry(db, kernel_id="k2")
    try:
        assert reopened.get(rec.run_id) == final
        assert final.owner == reg.owner == reopened.owner  # both registries belong to this process
        left = reopened.get(queued.run_id)  # ended by close(), not left behind
        assert left.state is RunState.CANCELLED and left.error == f"cancelled: {reg.owner} closed its run registry"
        assert reopened.active() == []  # not this registry's runs
        assert [r.run_id for r in reopened.recent()] == [queued.run_id, rec.run_id]
        assert [r.run_id for r in reopened.recent(kernel_id="k2")] == []
        assert reopened.get("missing") is None
    finally:
        reopened.close()


def test_earlier_kernels_run_can_be_adopted(db: Path) -> None:
    old = RunRegistry(db, kernel_id="k1")
    rid = old.create(backend="modal", profile={"detach": True}).run_id  # outlives its kernel
    old.start(rid, remote_id="fc-9")
    old.close()
    new = RunRegistry(db, kernel_id="k2")
    try:
        rec = new.finish(rid, RunState.DONE)  # e.g. reattach found the Modal call completed
        assert rec.kernel_id == "k1" and rec.remote_id == "fc-9"
        new.flush()
        assert raw_rows(db)[rid]["state"] == "done"
    finally:
        new.close()


def test_flush_makes_rows_visible_to_raw_sqlite(reg: RunRegistry, db: Path) -> None:
    rid = reg.create(backend="local", profile=PROFILE).run_id
    reg.start(rid)
    reg.flush()
    assert raw_rows(db)[rid]["state"] == "running"
    reg.finish(rid, RunState.DONE, outputs=["a"])
    reg.flush()
    row = raw_rows(db)[rid]
    assert row["state"] == "done" and row["outputs"] == ["a"] and row["profile"] == PROFILE


def test_wal_mode(reg: RunRegistry, db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_transitions_do_not_wait_for_a_locked_database(reg: RunRegistry, db: Path) -> None:
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        # All of this happens while the lock is held: if a transition waited on sqlite, it would
        # block here for the busy timeout instead of reaching the assertions.
        rec = reg.create(backend="local", profile={})
        reg.start(rec.run_id)
        reg.finish(rec.run_id, RunState.DONE)
        assert reg.get(rec.run_id).state is RunState.DONE
        assert rec.run_id not in {r for (r,) in locker.execute("SELECT run_id FROM runs")}
    finally:
        locker.execute("COMMIT")
        locker.close()
    reg.flush(timeout=30)
    assert raw_rows(db)[rec.run_id]["state"] == "done"


def test_writer_retries_after_busy_timeout(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mini_magic.run_store._BUSY_TIMEOUT", 0.01)
    failed = threading.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "failed" in record.getMessage():
                failed.set()

    spy = Spy()
    logging.getLogger("mini_magic.runs").addHandler(spy)
    try:
        with RunRegistry(db) as reg:
            locker = sqlite3.connect(db, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            try:
                rid = reg.create(backend="local", profile={}).run_id
                assert failed.wait(timeout=60)  # the writer gave up on this attempt ...
                reg.start(rid)  # ... and later changes merge with the batch it retries
            finally:
                locker.execute("COMMIT")
                locker.close()
            reg.flush(timeout=60)
            assert raw_rows(db)[rid]["state"] == "running"
    finally:
        logging.getLogger("mini_magic.runs").removeHandler(spy)


def test_threads_persist_every_run_exactly_once(reg: RunRegistry, db: Path) -> None:
    n_threads, per_thread = 8, 200
    events: list[str] = []
    reg.subscribe(lambda event, rec: events.append(event))  # list.append is atomic
    expected: dict[str, str] = {}
    expected_lock = threading.Lock()
    barrier = threading.Barrier(n_threads)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            rid = reg.create(backend="local", profile={"t": t}).run_id
            final = (RunState.DONE, RunState.FAILED, RunState.CANCELLED)[i % 3]
            if final is not RunState.CANCELLED or i % 2:
                reg.start(rid, worker_pid=t)
            reg.finish(rid, final)
            with expected_lock:
                expected[rid] = final.value

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    reg.flush(timeout=60)
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT run_id, state FROM runs").fetchall()
    finally:
        conn.close()
    assert len(rows) == n_threads * per_thread == len(expected)
    assert dict(rows) == expected
    assert events.count("created") == events.count("finished") == n_threads * per_thread
    assert reg.active() == []


def test_pruning_keeps_newest_finished(db: Path) -> None:
    reg = RunRegistry(db, keep=5)
    done = [reg.finish(reg.create(backend="local", profile={}).run_id, RunState.CANCELLED).run_id for _ in range(12)]
    open_run = reg.create(backend="modal", profile={"detach": True}).run_id  # stays open: never pruned
    reg.close()
    assert set(raw_rows(db)) == set(done[-5:]) | {open_run}
    # pruning on open, with a smaller keep
    reg = RunRegistry(db, keep=2)
    try:
        assert set(raw_rows(db)) == set(done[-2:]) | {open_run}
        assert [r.run_id for r in reg.recent()] == [open_run, *reversed(done[-2:])]
    finally:
        reg.close()


def test_memory_is_bounded_but_get_still_finds_runs(db: Path) -> None:
    with RunRegistry(db, keep=3) as reg:
        ids = [reg.finish(reg.create(backend="local", profile={}).run_id, RunState.FAILED).run_id for _ in range(10)]
        assert len(reg._records) == 3  # older finished runs are dropped from memory ...
        assert all(reg.get(rid) is not None for rid in ids)  # ... yet found in the queue or the store
        reg.flush()
        assert reg.get(ids[0]).state is RunState.FAILED


def test_two_registries_on_one_file(db: Path) -> None:
    a = RunRegistry(db, kernel_id="ka")
    b = RunRegistry(db, kernel_id="kb")
    try:
        for i in range(50):
            for reg in (a, b):
                rid = reg.create(backend="local", profile={"i": i}).run_id
                reg.start(rid)
                reg.finish(rid, RunState.DONE)
        a.flush(timeout=30)
        b.flush(timeout=30)
        assert len(raw_rows(db)) == 100
        assert {r.kernel_id for r in a.recent(limit=200)} == {"ka", "kb"}
        assert len(a.recent(limit=200, kernel_id="kb")) == 50
        assert all(r.kernel_id == "kb" for r in a.recent(limit=200, kernel_id="kb"))
        assert b.get(a.recent(limit=1, kernel_id="ka")[0].run_id) is not None
    finally:
        a.close()
        b.close()


def test_recent_merges_memory_and_store_newest_first(reg: RunRegistry) -> None:
    ids = [reg.create(backend="local", profile={}).run_id for _ in range(5)]
    reg.flush()
    reg.start(ids[0])  # newer state only in memory until the writer catches up
    recent = reg.recent(limit=3)
    assert [r.run_id for r in recent] == ids[::-1][:3]
    assert reg.recent(limit=10)[-1].state is RunState.RUNNING
    assert [r.run_id for r in reg.active()] == ids


def test_closed_registry_raises(db: Path) -> None:
    reg = RunRegistry(db)
    rid = reg.create(backend="local", profile={}).run_id
    reg.close()
    reg.close()  # idempotent
    for call in (
        lambda: reg.create(backend="local", profile={}),
        lambda: reg.start(rid),
        lambda: reg.update(rid, label="x"),
        lambda: reg.finish(rid, RunState.FAILED),
    ):
        with pytest.raises(RegistryClosed, match="run registry is closed"):
            call()
    assert reg.get(rid).state is RunState.CANCELLED  # reads still answer from memory
    with RunRegistry(db) as again:
        assert again.get(rid) is not None  # and close() flushed it


def test_default_path_uses_mini_magic_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "mm" / "home"
    monkeypatch.setenv("MINI_MAGIC_HOME", str(home))
    with RunRegistry() as reg:
        assert reg.path == home / "runs.sqlite"
    assert (home / "runs.sqlite").exists() and (home.stat().st_mode & 0o777) == 0o700


def test_store_files_are_private_whatever_the_home_s_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run records name cells, errors and crash logs: only the owner may read them, even in a shared home."""
    home = tmp_path / "shared"
    home.mkdir()
    home.chmod(0o777)
    monkeypatch.setenv("MINI_MAGIC_HOME", str(home))
    old_umask = os.umask(0)  # nothing filters the modes sqlite asks for
    try:
        (home / "runs.sqlite-wal").write_bytes(b"")  # left behind, world-readable, by an older version
        (home / "runs.sqlite-wal").chmod(0o666)
        with RunRegistry() as reg:
            reg.finish(reg.create(backend="local", profile=PROFILE).run_id, RunState.CANCELLED)
            reg.flush()
            modes = {f.name: f.stat().st_mode & 0o777 for f in home.iterdir()}
    finally:
        os.umask(old_umask)
    assert modes == {"runs.sqlite": 0o600, "runs.sqlite-wal": 0o600, "runs.sqlite-shm": 0o600}, modes


# -- serialisation ---------------------------------------------------------------------------------------


def test_json_round_trip(reg: RunRegistry) -> None:
    rid = reg.create(backend="modal", profile=PROFILE, cell_id="c", msg_id="m", label="l").run_id
    reg.start(rid, worker_pid=7, remote_id="fc")
    rec = reg.finish(rid, RunState.DONE, outputs=["a", "b"])
    d = json.loads(json.dumps(rec.to_json()))
    assert d["state"] == "done" and list(d) == list(rec.to_json())
    assert RunRecord.from_json(d) == rec
    assert RunRecord.from_json({**d, "future_field": 1}) == rec  # newer writers do not break older readers


# -- owners: every record reaches a terminal state ---------------------------------------------------------

# A kernel that records runs, then waits until its stdin closes or it is killed: close() never runs.
KERNEL = """
import json, os, sys
from mini_magic.owner import Owner, process_start
from mini_magic.runs import RunRegistry
host = sys.argv[2]
reg = RunRegistry(sys.argv[1], kernel_id="dead", owner=Owner(host, os.getpid(), process_start(os.getpid())))
running = reg.create(backend="local", profile={}).run_id
reg.start(running, worker_pid=1)
queued = reg.create(backend="local", profile={}).run_id
detached = reg.create(backend="modal", profile={"detach": True}).run_id
reg.start(detached, remote_id="fc-1")
reg.flush()
print(json.dumps([running, queued, detached]), flush=True)
sys.stdin.read()
os._exit(0)
"""


def start_kernel(db: Path, host: str) -> tuple[subprocess.Popen, list[str]]:
    child = subprocess.Popen([sys.executable, "-c", KERNEL, str(db), host], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    return child, json.loads(child.stdout.readline())


def test_runs_of_a_killed_kernel_are_marked_lost_but_not_its_detached_run(db: Path) -> None:
    child, (running, queued, detached) = start_kernel(db, socket.gethostname())
    try:
        with RunRegistry(db, kernel_id="next") as reg:
            heard: list[str] = []
            reg.subscribe(lambda event, rec: heard.append(rec.run_id))
            assert reg.reconcile() == []  # its owner is alive: its runs are its own business
            assert reg.get(running).state is RunState.RUNNING
            child.kill()  # kill -9: the owner never closes its registry
            child.wait()
            ended = reg.reconcile()
            lost = f"lost: kernel pid {child.pid} on {socket.gethostname()} died"
            assert sorted(r.run_id for r in ended) == sorted([running, queued])
            for rid in (running, queued):
                record = reg.get(rid)
                assert (record.state, record.error, record.kernel_id) == (RunState.FAILED, lost, "dead")
            assert reg.get(detached).state is RunState.RUNNING  # judged by its remote call, never by its kernel
            assert reg.reconcile() == []
            assert heard == [] and reg.active() == []  # recorded, not adopted: this kernel's UI never hears of them
        assert raw_rows(db)[running]["state"] == "failed"  # and it is stored
    finally:
        child.kill()
        child.wait()


def test_the_next_registry_marks_them_when_it_opens(db: Path) -> None:
    child, (running, _, detached) = start_kernel(db, socket.gethostname())
    child.kill()
    child.wait()
    with RunRegistry(db) as reg:
        assert reg.get(running).state is RunState.FAILED and reg.get(running).error.startswith("lost: kernel pid")
        assert reg.get(detached).state is RunState.RUNNING


def test_another_hosts_runs_are_never_judged(db: Path) -> None:
    # A home directory shared by a cluster: node-b's kernel pid does not exist here, which says nothing about node-b.
    child, ids = start_kernel(db, "node-b.cluster")
    child.kill()
    child.wait()
    with RunRegistry(db) as reg:
        assert reg.reconcile() == []
        assert [reg.get(rid).state for rid in ids] == [RunState.RUNNING, RunState.QUEUED, RunState.RUNNING]


def test_records_of_older_versions_without_owner_are_left_alone(db: Path) -> None:
    with RunRegistry(db) as reg:
        rid = reg.create(backend="local", profile={"detach": True}).run_id
        reg.start(rid)
    conn = sqlite3.connect(db)
    try:
        data = json.loads(conn.execute("SELECT data FROM runs WHERE run_id = ?", (rid,)).fetchone()[0])
        del data["owner"]
        data["profile"] = {}
        conn.execute("UPDATE runs SET data = ? WHERE run_id = ?", (json.dumps(data), rid))
        conn.commit()
    finally:
        conn.close()
    with RunRegistry(db) as reg:
        assert reg.get(rid).owner is None
        assert reg.reconcile() == [] and reg.get(rid).state is RunState.RUNNING


def test_close_cancels_unfinished_runs_with_the_reason_and_keeps_it(db: Path) -> None:
    reg = RunRegistry(db, kernel_id="k")
    events: list[tuple[str, str, str]] = []
    reg.subscribe(lambda event, rec: events.append((event, rec.run_id, rec.state.value)))
    running = reg.create(backend="local", profile={}).run_id
    reg.start(running)
    queued = reg.create(backend="local", profile={}).run_id
    done = reg.create(backend="local", profile={}).run_id
    reg.start(done)
    reg.finish(done, RunState.DONE)
    detached = reg.create(backend="modal", profile={"detach": True}).run_id
    reg.start(detached, remote_id="fc-2")
    reg.close(f"{reg.owner} restarted")
    why = f"cancelled: kernel pid {os.getpid()} on {socket.gethostname()} restarted"
    assert {r: (reg.get(r).state, reg.get(r).error) for r in (running, queued)} == {
        running: (RunState.CANCELLED, why), queued: (RunState.CANCELLED, why)}
    assert ("finished", running, "cancelled") in events and ("finished", queued, "cancelled") in events
    assert reg.get(done).state is RunState.DONE and reg.get(detached).state is RunState.RUNNING
    # The worker dies after close (the backend stops it): its drainer's ending must not replace the reason.
    with pytest.raises(RegistryClosed):
        reg.finish(running, RunState.FAILED, error="WorkerCrashed: killed by SIGTERM")
    rows = raw_rows(db)
    assert (rows[running]["state"], rows[running]["error"]) == ("cancelled", why)
    assert rows[detached]["state"] == "running"
