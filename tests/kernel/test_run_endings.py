"""Every run record reaches a terminal state, however its kernel ends: real kernels, real workers, one run store.

A kernel that shuts down or restarts records its unfinished runs as cancelled with the reason; a kernel killed with
SIGKILL cannot, so the next kernel on the same host marks them failed as lost.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import textwrap
from pathlib import Path

import pytest
from tests import polling

pytestmark = pytest.mark.slow

# Two background runs that sleep, started and seen running; prints what the test needs to find them again.
START_RUNS = textwrap.dedent("""
    import json, os, time
    for name in ('first', 'second'):
        get_ipython().run_cell_magic('thither', f'--bg --name {name}', 'import time\\ntime.sleep(120)')
    t0 = time.monotonic()
    while {first.state, second.state} != {'running'} and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    print(json.dumps({'kernel': os.getpid(), 'states': [first.state, second.state],
                      'runs': [first.run_id, second.run_id],
                      'workers': [first.record.worker_pid, second.record.worker_pid]}))
""").strip()


def start_runs(kernel) -> dict:
    result = kernel.run(START_RUNS)
    assert result.error is None, result.error
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["states"] == ["running", "running"], info
    return info


def stored(db: Path, run_id: str) -> dict | None:
    conn = sqlite3.connect(db, timeout=5)
    try:
        row = conn.execute("SELECT data FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    finally:
        conn.close()
    return json.loads(row[0]) if row else None


def wait_until(predicate, timeout: float = 20.0) -> bool:
    return polling.wait_until(predicate, timeout, interval=0.05)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def listing_lines(kernel, run_ids: list[str]) -> list[str]:
    result = kernel.run("%thither runs --all")
    assert result.error is None, result.error
    return [line for line in result.stdout.splitlines() if line.split()[:1] and line.split()[0] in run_ids]


@pytest.mark.parametrize("restart", [True, False], ids=["restart", "shutdown"])
def test_a_graceful_shutdown_cancels_background_runs_with_the_reason(live_kernel, workdir: Path, restart: bool):
    kernel = live_kernel(fresh=restart)
    info = start_runs(kernel)
    if restart:
        kernel.km.restart_kernel(now=False)  # a shutdown_request with restart=True, as the frontend sends
        kernel.client.wait_for_ready(timeout=60)
    else:
        kernel.km.shutdown_kernel(now=False)
    why = f"cancelled: kernel pid {info['kernel']} on {socket.gethostname()} {'restarted' if restart else 'shut down'}"
    db = workdir / "home" / "runs.sqlite"
    for run_id in info["runs"]:
        record = stored(db, run_id)
        assert record is not None and (record["state"], record["error"]) == ("cancelled", why), record
    assert wait_until(lambda: not any(alive(pid) for pid in info["workers"])), "a worker outlived its kernel"
    if restart:  # the new kernel says so too
        assert kernel.run("%load_ext mini_magic").error is None
        lines = listing_lines(kernel, info["runs"])
        assert len(lines) == 2 and all("cancelled" in line and why in line for line in lines), lines


def test_the_next_kernel_marks_the_runs_of_a_killed_kernel_lost(live_kernel, workdir: Path):
    info = start_runs(live_kernel())
    db = workdir / "home" / "runs.sqlite"
    # The writer thread stores runs in the background: wait until the store says running before the kill.
    assert wait_until(lambda: all((stored(db, r) or {}).get("state") == "running" for r in info["runs"]))
    os.kill(info["kernel"], signal.SIGKILL)
    try:
        assert wait_until(lambda: not alive(info["kernel"]))
        lost = f"lost: kernel pid {info['kernel']} on {socket.gethostname()} died"
        lines = listing_lines(live_kernel(), info["runs"])  # a new kernel, the same MINI_MAGIC_HOME
        assert len(lines) == 2 and all(" failed " in line and lost in line for line in lines), lines
        for run_id in info["runs"]:
            record = stored(db, run_id)
            assert (record["state"], record["error"]) == ("failed", lost), record
    finally:
        for pid in info["workers"]:  # what becomes of an orphaned worker is not this test's subject
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_unloading_the_extension_cancels_background_runs_quietly(live_kernel):
    kernel = live_kernel()
    info = start_runs(kernel)
    unloaded = kernel.run("%unload_ext mini_magic")
    assert unloaded.error is None and unloaded.stderr == "", unloaded.outputs  # no drainer traceback lands here
    result = kernel.run(textwrap.dedent("""
        from mini_magic import RunCancelled
        print(first.wait(20), first.state)
        try:
            first.result()
        except RunCancelled as exc:
            print('raised', exc)
    """))
    assert result.error is None, result.error
    why = f"cancelled: kernel pid {info['kernel']} on {socket.gethostname()} unloaded mini_magic (%unload_ext)"
    assert result.stdout == f"True cancelled\nraised {why}; nothing was assigned.\n", result.stdout
    assert wait_until(lambda: not any(alive(pid) for pid in info["workers"]))
