"""Worker processes under a real kernel: interrupts, crashes, timeouts, warm reuse and recycling, the pool limit,
the run registry, exit with the kernel, no TCP listener, and protocol mismatches.

Processes are inspected through /proc only (no psutil): a worker runs ``-m mini_magic.worker`` and is the child of
its keeper (``-m mini_magic.worker.keeper``), a child of the kernel.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from mini_magic import proctree, wire
from mini_magic.options import RunOptions
from mini_magic.backends.local import LocalBackend
from mini_magic.jobs import CellContext, build_job
from mini_magic.owner import Owner, process_start
from tests.polling import wait_until

from .conftest import kernel_env

pytestmark = pytest.mark.slow

PRINT_PID = "%%thither\nimport os\nprint('PID', os.getpid(), flush=True)"


# -- /proc helpers ---------------------------------------------------------------------------------------


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...]; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def exists(pid: int) -> bool:
    """The process table still holds the pid (a zombie counts: its parent has not reaped it)."""
    return proc_stat(pid) is not None


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def session_of(pid: int) -> int:
    fields = proc_stat(pid)
    assert fields is not None, f"process {pid} is gone"
    return int(fields[3])


def parent_of(pid: int) -> int:
    fields = proc_stat(pid)
    assert fields is not None, f"process {pid} is gone"
    return int(fields[1])


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def running_children(parent: int, module: str) -> set[int]:
    """Running processes whose parent is ``parent`` and whose command line runs ``python -m <module>``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X") or int(fields[1]) != parent:
            continue
        if module in cmdline(pid):
            found.add(pid)
    return found


def workers_of(kernel: int) -> set[int]:
    """The kernel's running workers: children of its keepers."""
    return {pid for keeper in running_children(kernel, "mini_magic.worker.keeper")
            for pid in running_children(keeper, "mini_magic.worker")}


def kernel_pid(kernel) -> int:
    provisioner = kernel.km.provisioner
    pid = getattr(provisioner, "pid", None) or provisioner.process.pid
    assert running(pid)
    return pid


def pids_in(text: str, tag: str = "PID") -> list[int]:
    return [int(m) for m in re.findall(rf"^{tag} (\d+)", text, flags=re.M)]


def pid_of(result, tag: str = "PID") -> int:
    assert result.error is None, result.error
    (pid,) = pids_in(result.stdout, tag)
    return pid


def defined(kernel, name: str) -> bool:
    result = kernel.run(f"print({name!r} in globals())")
    assert result.error is None, result.error
    return {"True\n": True, "False\n": False}[result.stdout]


def submit_with_metadata(kernel, code: str, metadata: dict) -> str:
    """An execute_request that carries request metadata, as notebook frontends (and nbclient) send cellId."""
    client = kernel.client
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}
    msg = client.session.msg("execute_request", content, metadata=metadata)
    client.shell_channel.send(msg)
    return msg["header"]["msg_id"]


BLOCKING_CELL = (
    "import os, time\n"
    "print('PID', os.getpid(), flush=True)\n"
    "print('started', flush=True)\n"
    "while True:\n"
    "    time.sleep(0.05)\n"
)


def start_blocking(kernel, header: str = "%%thither", prelude: str = "") -> tuple[str, int]:
    """Submit a thither cell that blocks forever; return (msg_id, worker pid) once it is running."""
    msg_id = kernel.submit(f"{header}\n{prelude}{BLOCKING_CELL}")
    seen = kernel.wait_for_stdout(msg_id, "started", timeout=30)
    (pid,) = pids_in(seen.stdout)
    return msg_id, pid


# -- 1. interrupt ----------------------------------------------------------------------------------------


@pytest.mark.kernel_interrupt
def test_interrupt_stops_the_run_kills_its_worker_and_assigns_nothing(live_kernel):
    kernel = live_kernel()
    msg_id, pid = start_blocking(kernel, prelude="assigned_before_loop = 1\n")
    assert running(pid)

    kernel.interrupt()
    result = kernel.collect(msg_id, timeout=30)

    assert result.error is not None, result.outputs
    assert result.error["ename"] == "KeyboardInterrupt"
    assert not defined(kernel, "assigned_before_loop")
    assert wait_until(lambda: not exists(pid), 10), f"worker {pid} of the interrupted run is still there"
    after = pid_of(kernel.run(PRINT_PID))
    assert after != pid


@pytest.mark.kernel_interrupt
def test_interrupt_of_a_cell_that_ignores_sigint_kills_it_after_the_grace(live_kernel):
    kernel = live_kernel()
    msg_id, pid = start_blocking(
        kernel, prelude="import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nstubborn = 1\n"
    )

    t0 = time.monotonic()
    kernel.interrupt()
    result = kernel.collect(msg_id, timeout=30)
    elapsed = time.monotonic() - t0

    assert result.error is not None, result.outputs
    assert result.error["ename"] == "KeyboardInterrupt"
    assert elapsed < 15, f"the stubborn cell took {elapsed:.1f} s to stop"  # liveness bound, grace is 1 s
    assert wait_until(lambda: not exists(pid), 10), f"worker {pid} that ignored SIGINT was not killed"
    assert not defined(kernel, "stubborn")
    assert pid_of(kernel.run(PRINT_PID)) != pid


# -- 2. an interrupt reaches only that run's worker ------------------------------------------------------


@pytest.mark.kernel_interrupt
def test_interrupt_reaches_only_the_running_worker(live_kernel):
    kernel = live_kernel()
    kpid = kernel_pid(kernel)
    p1 = pid_of(kernel.run("%%thither --env P=1\nimport os\nprint('PID', os.getpid(), os.environ['P'])"))
    p2 = pid_of(kernel.run("%%thither --env P=2\nimport os\nprint('PID', os.getpid(), os.environ['P'])"))
    assert p1 != p2

    # Each worker is a child of its keeper, a child of the kernel, in a session of its own (not the kernel's, not
    # each other's).
    assert parent_of(parent_of(p1)) == kpid and parent_of(parent_of(p2)) == kpid
    assert "mini_magic.worker" in cmdline(p1)
    sessions = {session_of(kpid), session_of(p1), session_of(p2)}
    assert len(sessions) == 3, sessions
    normal = kernel.run("import os; print('SID', os.getsid(0))")
    assert int(re.search(r"SID (\d+)", normal.stdout).group(1)) == session_of(kpid)
    remote = kernel.run("%%thither --env P=2\nimport os\nprint('SID', os.getsid(0))")
    assert int(re.search(r"SID (\d+)", remote.stdout).group(1)) == session_of(p2) != session_of(kpid)

    bystanders = workers_of(kpid)  # the P=2 worker, the prewarmed default one, ...
    msg_id, p3 = start_blocking(kernel, header="%%thither --env P=1")
    assert p3 == p1, "the warm P=1 worker was not reused"
    bystanders.discard(p3)
    assert p2 in bystanders

    kernel.interrupt()
    result = kernel.collect(msg_id, timeout=30)

    assert result.error is not None and result.error["ename"] == "KeyboardInterrupt", result.outputs
    assert wait_until(lambda: not exists(p3), 10)
    still = {pid for pid in bystanders if running(pid)}
    assert still == bystanders, f"idle workers {bystanders - still} died with the interrupt"
    again = kernel.run("%%thither --env P=2\nimport os\nprint('PID', os.getpid(), os.environ['P'])")
    assert pid_of(again) == p2
    assert again.stdout.strip() == f"PID {p2} 2"
    assert kernel.run("print('kernel ok')").stdout == "kernel ok\n"


# -- 3. crashes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crash", "expected"),
    [
        ("os._exit(3)", r"\bcode 3\b"),
        ("os.kill(os.getpid(), signal.SIGSEGV)", r"\bSIGSEGV\b"),
        ("os.kill(os.getpid(), signal.SIGKILL)", r"\bSIGKILL\b"),
    ],
    ids=["exit-3", "sigsegv", "sigkill"],
)
@pytest.mark.process_lifecycle
def test_worker_crash_is_reported_and_the_next_cell_gets_a_fresh_worker(live_kernel, workdir, crash, expected):
    kernel = live_kernel()
    # The pid goes to a file (written and closed before the crash): output still in flight when the process dies
    # is not what this test is about.
    result = kernel.run(
        "%%thither\nimport os, signal\ncrash_victim = 1\n"
        "with open('crashed.pid', 'w') as f:\n    f.write(str(os.getpid()))\n"
        f"{crash}\nafter_crash = 1",
        timeout=30,
    )
    assert result.error is not None, result.outputs
    assert result.error["ename"] == "WorkerCrashed"
    assert re.search(expected, result.error["evalue"]), result.error["evalue"]
    pid = int((workdir / "crashed.pid").read_text())
    assert wait_until(lambda: not exists(pid), 10)

    assert kernel.run("print('alive')").stdout == "alive\n"
    assert not defined(kernel, "crash_victim")
    assert not defined(kernel, "after_crash")
    fresh = kernel.run("%%thither\nimport os\nprint('PID', os.getpid())\nok_after_crash = 2")
    assert pid_of(fresh) != pid
    assert kernel.run("print(ok_after_crash)").stdout == "2\n"


@pytest.mark.process_lifecycle
def test_output_written_just_before_a_crash_reaches_the_cell(live_kernel):
    kernel = live_kernel()
    result = kernel.run("%%thither\nimport os\nprint('last words', flush=True)\nos._exit(3)", timeout=30)
    assert result.error is not None and result.error["ename"] == "WorkerCrashed"
    assert "last words" in result.stdout
    segv = kernel.run("%%thither\nimport os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", timeout=30)
    assert segv.error is not None and "SIGSEGV" in segv.error["evalue"]
    assert "Segmentation fault" in segv.stderr  # faulthandler's dump of the dying worker's stacks


@pytest.mark.process_lifecycle
def test_back_to_back_runs_reuse_the_warm_worker(tmp_path):
    backend = LocalBackend(max_workers=4, prewarm=False)
    options = RunOptions(backend="local")
    pids = set()
    try:
        for _ in range(10):
            handle = backend.submit(build_job("x = 1", {}, options, CellContext(cwd=str(tmp_path)))[0], options)
            events = run_to_end(handle)
            pids.update(e.pid for e in events if isinstance(e, wire.Started))
            assert isinstance(events[-1], wire.Result)
    finally:
        backend.close()
    assert len(pids) == 1, f"a run submitted right after the previous one ended got a new worker: {pids}"


# -- 4. timeout ------------------------------------------------------------------------------------------


@pytest.mark.process_lifecycle
def test_timeout_stops_the_run_promptly_and_recycles_the_worker(live_kernel):
    kernel = live_kernel()
    t0 = time.monotonic()
    result = kernel.run(
        "%%thither --timeout 1\nimport os, time\nprint('PID', os.getpid(), flush=True)\ntime.sleep(30)\nslept = 1",
        timeout=60,
    )
    elapsed = time.monotonic() - t0

    assert result.error is not None, result.outputs
    assert result.error["ename"] == "RunTimeout"
    assert elapsed < 20, f"a 1 s timeout took {elapsed:.1f} s"  # liveness: the 30 s sleep did not run out
    (pid,) = pids_in(result.stdout)
    assert wait_until(lambda: not exists(pid), 10)
    assert not defined(kernel, "slept")
    assert pid_of(kernel.run(PRINT_PID)) != pid


@pytest.mark.process_lifecycle
def test_timeout_stops_a_cell_that_ignores_sigint(live_kernel):
    kernel = live_kernel()
    t0 = time.monotonic()
    result = kernel.run(
        "%%thither --timeout 1\nimport os, signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('PID', os.getpid(), flush=True)\ntime.sleep(30)",
        timeout=60,
    )
    assert result.error is not None and result.error["ename"] == "RunTimeout", result.outputs
    assert time.monotonic() - t0 < 20
    (pid,) = pids_in(result.stdout)
    assert wait_until(lambda: not exists(pid), 10)


# -- 5. warm workers -------------------------------------------------------------------------------------


@pytest.mark.process_lifecycle
def test_warm_workers_are_reused_until_dirtied_and_are_spawned_fresh(run_notebook):
    cells = run_notebook([
        PRINT_PID,
        PRINT_PID,
        PRINT_PID + "\nraise ValueError('a plain error leaves no threads')",
        PRINT_PID,
        PRINT_PID + "\nimport threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), name='lingering', daemon=False).start()",
        PRINT_PID,
        PRINT_PID + "\nimport multiprocessing\nprint('PARENT', multiprocessing.parent_process())\n"
        "print('CMDLINE', open(f'/proc/{os.getpid()}/cmdline', 'rb').read().split(b'\\0'))",
    ])
    first, second, failed, after_error, threaded, after_thread, spawn = cells
    p = [pids_in(c.stdout) for c in cells]
    assert all(len(x) == 1 for x in p), [c.outputs for c in cells]
    p = [x[0] for x in p]

    assert first.error is None and second.error is None
    assert p[1] == p[0], "two trivial cells in a row did not share the warm worker"
    assert failed.error is not None and failed.error["ename"] == "ValueError"
    assert p[2] == p[1]
    assert after_error.error is None and p[3] == p[2], "a worker was not reused after a plain error"
    assert threaded.error is None, threaded.error
    assert p[4] == p[3]
    assert after_thread.error is None and p[5] != p[4], "a worker with a running non-daemon thread was reused"

    assert spawn.error is None, spawn.error
    assert "PARENT None" in spawn.stdout
    assert "b'mini_magic.worker'" in spawn.stdout.split("CMDLINE", 1)[1]


@pytest.mark.process_lifecycle
def test_worker_is_a_spawned_grandchild_of_the_kernel_through_its_keeper(live_kernel):
    kernel = live_kernel()
    kpid = kernel_pid(kernel)
    pid = pid_of(kernel.run(PRINT_PID))
    keeper = parent_of(pid)
    assert parent_of(keeper) == kpid
    assert cmdline(keeper)[1:3] == ["-m", "mini_magic.worker.keeper"], cmdline(keeper)
    args = cmdline(pid)
    assert args[1:3] == ["-m", "mini_magic.worker"], args
    assert pid in workers_of(kpid)


# -- 6. workers exit with the kernel ---------------------------------------------------------------------


@pytest.mark.process_lifecycle
def test_workers_exit_when_the_kernel_is_killed(live_kernel):
    kernel = live_kernel()
    kpid = kernel_pid(kernel)
    idle = pid_of(kernel.run(PRINT_PID))
    _, busy = start_blocking(kernel, header="%%thither --env BUSY=1")
    workers = workers_of(kpid)
    assert {idle, busy} <= workers

    kernel.km.shutdown_kernel(now=True)  # SIGKILL: no atexit, no clean close of the backend

    assert wait_until(lambda: not running(kpid), 10)
    left = set(workers)
    assert wait_until(lambda: not any(running(pid) for pid in left), 8), (
        f"workers {[pid for pid in left if running(pid)]} outlived their kernel"
    )


# -- 6b. nothing a run started outlives it ---------------------------------------------------------------

# A cell that starts two processes that escape a plain kill of the worker: `!cmd &` leaves an orphan (its shell exits
# at once), and a setsid child has a session and process group of its own. Their pids go to a file (a background
# run's output does not reach the cell's stream).
ESCAPEES = (
    "import json, os, subprocess, time\n"
    "orphan = !sleep 300 > /dev/null 2>&1 & echo $!\n"
    "setsid = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
    "with open('escapees.partial', 'w') as f:\n"
    "    json.dump({'worker': os.getpid(), 'keeper': os.getppid(), 'orphan': int(orphan[0]), 'setsid': setsid.pid},"
    " f)\n"
    "os.replace('escapees.partial', 'escapees.json')\n"
    "del orphan, setsid, f\n"
)


def escapees(workdir: Path, timeout: float = 30) -> dict[str, int]:
    """The pids the ESCAPEES prelude wrote, once it wrote them (a cell may end right after)."""
    path = workdir / "escapees.json"
    assert wait_until(path.exists, timeout), "the cell did not start its processes"
    pids = json.loads(path.read_text())
    path.unlink()
    return pids


def all_running(pids: dict[str, int]) -> bool:
    """All still there, the setsid one in a session of its own."""
    return all(running(pid) for pid in pids.values()) and session_of(pids["setsid"]) != session_of(pids["worker"])


def gone(pids: dict[str, int], timeout: float = 10) -> bool:
    return wait_until(lambda: not any(running(pid) for pid in pids.values()), timeout)


@pytest.mark.process_lifecycle
@pytest.mark.kernel_interrupt
@pytest.mark.parametrize("ending", ["interrupt", "timeout", "cancel", "crash", "normal end"])
def test_no_process_a_run_started_outlives_the_run(live_kernel, workdir, ending):
    kernel = live_kernel()
    block = "while True:\n    time.sleep(0.05)\n"
    if ending == "interrupt":
        msg_id = kernel.submit(f"%%thither\n{ESCAPEES}{block}")
        pids = escapees(workdir)
        assert all_running(pids)
        kernel.interrupt()
        assert kernel.collect(msg_id, timeout=30).error["ename"] == "KeyboardInterrupt"
    elif ending == "timeout":
        msg_id = kernel.submit(f"%%thither --timeout 5\n{ESCAPEES}{block}")
        pids = escapees(workdir)
        assert all_running(pids)
        assert kernel.collect(msg_id, timeout=60).error["ename"] == "RunTimeout"
    elif ending == "cancel":
        assert kernel.run(f"%%thither --bg --name job\n{ESCAPEES}{block}").error is None
        pids = escapees(workdir)
        assert all_running(pids)
        cancelled = kernel.run("job.cancel()\nprint(job.wait(20), job.state)")
        assert cancelled.stdout == "True cancelled\n", cancelled.outputs
    elif ending == "crash":
        msg_id = kernel.submit(f"%%thither\n{ESCAPEES}os._exit(3)")
        pids = escapees(workdir)
        assert kernel.collect(msg_id, timeout=30).error["ename"] == "WorkerCrashed"
    else:
        msg_id = kernel.submit(f"%%thither\n{ESCAPEES}")
        pids = escapees(workdir)
        assert kernel.collect(msg_id, timeout=30).error is None
    assert gone(pids), f"still running after the run's {ending}: {[p for p in pids.values() if running(p)]}"
    assert pid_of(kernel.run(PRINT_PID)) != pids["worker"]


@pytest.mark.process_lifecycle
def test_killing_the_kernel_ends_a_worker_that_holds_the_gil_and_everything_it_started(live_kernel, workdir):
    tmp = workdir / "tmp"
    tmp.mkdir()
    kernel = live_kernel(env={"TMPDIR": str(tmp)})
    kpid = kernel_pid(kernel)
    idle = pid_of(kernel.run(PRINT_PID))
    # re holds the GIL for the whole match (2**40 steps): the worker's own watchdog thread never runs again.
    assert kernel.run(f"%%thither --bg --name job\n{ESCAPEES}import re\nre.match(r'(a+)+$', 'a' * 40 + '!')").error \
        is None
    pids = escapees(workdir)
    (runtime_dir,) = tmp.glob("mini-magic-*")
    time.sleep(0.5)  # well inside the match by now
    assert all_running(pids)

    os.kill(kpid, signal.SIGKILL)
    t0 = time.monotonic()
    assert wait_until(lambda: not running(pids["worker"]), 5, interval=0.01), "the GIL-holding worker outlived " \
        "its kernel by 5 s"
    took = time.monotonic() - t0
    print(f"the GIL-holding worker ended {took:.2f} s after kill -9 of its kernel")
    assert gone({**pids, "idle": idle}, 5)
    assert wait_until(lambda: not runtime_dir.exists(), 5), "the dead kernel's runtime directory is still there"


# The "kernel" here is a plain process with the local backend, so that it can detach a worker (no front end offers
# a local detach yet) and close the backend before it is killed.
SELF_KILLING_KERNEL = f"""
import os, signal, sys, time
from IPython.core.inputtransformer2 import TransformerManager
from mini_magic.options import RunOptions
from mini_magic.backends.local import LocalBackend
from mini_magic.jobs import CellContext, build_job

backend = LocalBackend(max_workers=1, prewarm=False)
options = RunOptions(backend="local")
cell = TransformerManager().transform_cell({ESCAPEES!r}) + "while True: time.sleep(0.05)"
run = backend.submit(build_job(cell, {{}}, options, CellContext(cwd=os.getcwd()))[0], options)
while not os.path.exists('escapees.json'):
    time.sleep(0.02)
if sys.argv[1] == "detach":
    run.worker.detach()
    backend.close()  # a clean close spares a detached worker too,
    time.sleep(6)  # also once the worker's reader thread stopped waiting (5 s) for its keeper to exit
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.process_lifecycle
@pytest.mark.parametrize("detached", [False, True], ids=["attached", "detached"])
def test_only_a_detached_worker_outlives_its_kernel(workdir, detached):
    tmp = workdir / "tmp"
    tmp.mkdir()
    kernel = subprocess.run([sys.executable, "-c", SELF_KILLING_KERNEL, "detach" if detached else "attached"],
                            cwd=workdir, env=kernel_env(workdir, TMPDIR=str(tmp)), timeout=60, capture_output=True,
                            text=True)
    assert kernel.returncode == -signal.SIGKILL, kernel.stderr
    pids = escapees(workdir)
    try:
        if detached:
            time.sleep(2)  # eight times the keeper's poll
            assert all_running(pids), pids
        else:
            assert gone(pids, 5)
            assert list(tmp.glob("mini-magic-*")) == []
    finally:
        proctree.kill_tree(pids["keeper"])
        shutil.rmtree(tmp, ignore_errors=True)
    assert gone(pids)


@pytest.mark.process_lifecycle
def test_a_new_kernel_removes_runtime_dirs_of_dead_kernels_only(live_kernel, workdir):
    tmp = workdir / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    first = live_kernel(env=env)
    (live_dir,) = tmp.glob("mini-magic-*")
    assert json.loads((live_dir / "owner.json").read_text())["pid"] == kernel_pid(first)

    sleeper = subprocess.Popen(["sleep", "30"])
    dead = Owner(socket.gethostname(), sleeper.pid, process_start(sleeper.pid))
    sleeper.kill()
    sleeper.wait()
    dead_dir = tmp / "mini-magic-deadkernel"
    dead_dir.mkdir()
    (dead_dir / "owner.json").write_text(json.dumps(dead.to_json()))
    (dead_dir / "worker-1.log").write_text("left behind")
    unmarked = tmp / "mini-magic-unmarked"  # an older version's, or one being made right now: not ours to judge
    unmarked.mkdir()

    second = live_kernel(env=env)
    assert kernel_pid(second) != kernel_pid(first)
    assert not dead_dir.exists(), "the dead kernel's runtime directory was not removed"
    assert live_dir.exists() and unmarked.exists()
    assert len(list(tmp.glob("mini-magic-*"))) == 3  # the live one, the unmarked one, and the second kernel's


# -- 7. pool limit and queueing --------------------------------------------------------------------------


def drain_all(handles: dict[str, object], timeout: float = 30) -> list[tuple[str, wire.Event]]:
    """Poll every handle until each delivered a terminal event; the log keeps the causal order across handles:
    after waiting on one handle, the others are drained without waiting, and logged first."""
    log: list[tuple[str, wire.Event]] = []
    done: set[str] = set()
    deadline = time.monotonic() + timeout
    names = list(handles)
    while len(done) < len(handles):
        assert time.monotonic() < deadline, f"runs did not finish: {log}"
        for name in names:
            if name in done:
                continue
            waited = handles[name].next_events(0.05)
            for other in names:
                if other != name and other not in done:
                    for event in handles[other].next_events(0):
                        log.append((other, event))
                        if event.terminal:
                            done.add(other)
            for event in waited:
                log.append((name, event))
                if event.terminal:
                    done.add(name)
    return log


def stdout_of(log, name: str) -> str:
    return "".join(e.text for n, e in log if n == name and isinstance(e, wire.Stdout))


@pytest.mark.process_lifecycle
def test_pool_limit_queues_the_second_run_until_the_first_finished(tmp_path):
    backend = LocalBackend(max_workers=1, prewarm=False)
    options = RunOptions(backend="local")
    context = CellContext(cwd=str(tmp_path))
    first = build_job(
        "import os, time\nprint('A-START', time.time(), os.getpid(), flush=True)\ntime.sleep(1.5)\n"
        "print('A-END', time.time(), flush=True)",
        {}, options, context,
    )[0]
    second = build_job("import os, time\nprint('B-START', time.time(), os.getpid(), flush=True)", {}, options, context)[0]
    a_pid = None
    try:
        h1 = backend.submit(first, options)
        h2 = backend.submit(second, options)
        # While the first run holds the only worker, the second yields nothing at all.
        early = h1.next_events(30)
        assert any(isinstance(e, wire.Started) for e in early), f"the first run did not start: {early}"
        assert not any(e.terminal for e in early), early
        assert h2.next_events(0.5) == []
        assert len(backend.pool.workers()) == 1

        log = [("A", e) for e in early] + drain_all({"A": h1, "B": h2})
        a_end = next(i for i, (n, e) in enumerate(log) if n == "A" and e.terminal)
        b_start = next(i for i, (n, e) in enumerate(log) if n == "B" and isinstance(e, wire.Started))
        assert a_end < b_start, f"the second run started before the first finished: {log}"
        assert isinstance(log[a_end][1], wire.Result)
        assert isinstance(next(e for n, e in log if n == "B" and e.terminal), wire.Result)

        a_out, b_out = stdout_of(log, "A"), stdout_of(log, "B")
        a_done = float(re.search(r"A-END (\S+)", a_out).group(1))
        b_began, b_pid = re.search(r"B-START (\S+) (\d+)", b_out).groups()
        a_pid = re.search(r"A-START \S+ (\d+)", a_out).group(1)
        assert float(b_began) >= a_done
        assert b_pid == a_pid, "with one allowed worker, the queued run should get the same (warm) worker"
        assert len(backend.pool.workers()) == 1
    finally:
        backend.close()
    assert a_pid is not None
    assert wait_until(lambda: not exists(int(a_pid)), 10), "close() left the worker running"


@pytest.mark.process_lifecycle
def test_a_queued_run_can_be_cancelled_without_touching_the_running_one(tmp_path):
    backend = LocalBackend(max_workers=1, prewarm=False)
    options = RunOptions(backend="local")
    context = CellContext(cwd=str(tmp_path))
    try:
        h1 = backend.submit(build_job("import time\ntime.sleep(1)\nprint('A done')", {}, options, context)[0], options)
        h2 = backend.submit(build_job("open('NEVER', 'w').write('x')", {}, options, context)[0], options)
        h2.cancel()
        events = h2.next_events(5)
        assert len(events) == 1 and isinstance(events[0], wire.Cancelled), events
        log = drain_all({"A": h1})
        assert isinstance(log[-1][1], wire.Result)
        assert stdout_of(log, "A") == "A done\n"
        assert h2.next_events(0.3) == []
        assert not (tmp_path / "NEVER").exists()
    finally:
        backend.close()


# -- 8. the run registry ---------------------------------------------------------------------------------


def stored_runs(db: Path) -> list[dict]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=5)
    try:
        rows = conn.execute("SELECT state, data FROM runs").fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()
    out = []
    for state, data in rows:
        record = json.loads(data)
        assert record["state"] == state
        out.append(record)
    return out


@pytest.mark.kernel_interrupt
def test_run_registry_records_done_failed_and_cancelled_runs(live_kernel, workdir):
    kernel = live_kernel()
    cell_ids = {kind: f"cell-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("ok", "err", "int")}

    ok_msg = submit_with_metadata(kernel, "%%thither\nregistry_value = 41 + 1", {"cellId": cell_ids["ok"]})
    assert kernel.collect(ok_msg).error is None
    err_msg = submit_with_metadata(kernel, "%%thither\nraise ValueError('boom from the worker')",
                                   {"cellId": cell_ids["err"]})
    err = kernel.collect(err_msg)
    assert err.error is not None and err.error["ename"] == "ValueError"
    int_msg = submit_with_metadata(kernel, "%%thither\n" + BLOCKING_CELL, {"cellId": cell_ids["int"]})
    kernel.wait_for_stdout(int_msg, "started")
    kernel.interrupt()
    assert kernel.collect(int_msg, timeout=30).error["ename"] == "KeyboardInterrupt"

    listing = kernel.run("%thither runs")
    assert listing.error is None, listing.error
    lines = listing.stdout.splitlines()
    assert any("done" in line and "local" in line and "registry_value = 41 + 1" in line for line in lines), lines
    assert any("failed" in line and "boom from the worker" in line for line in lines), lines
    assert any("cancelled" in line and "KeyboardInterrupt" in line for line in lines), lines

    db = workdir / "home" / "runs.sqlite"
    wanted = {ok_msg, err_msg, int_msg}

    def persisted() -> bool:
        by_msg = {r["msg_id"]: r for r in stored_runs(db)}
        return wanted <= set(by_msg) and all(by_msg[m]["state"] in ("done", "failed", "cancelled") for m in wanted)

    assert wait_until(persisted, 10), f"runs not persisted in {db}: {stored_runs(db)}"
    by_msg = {r["msg_id"]: r for r in stored_runs(db)}
    ok, failed, cancelled = by_msg[ok_msg], by_msg[err_msg], by_msg[int_msg]

    for record, kind in ((ok, "ok"), (failed, "err"), (cancelled, "int")):
        assert record["backend"] == "local"
        assert record["cell_id"] == cell_ids[kind]
        assert record["started_at"] is not None and record["finished_at"] is not None, record
        assert record["created_at"] <= record["started_at"] <= record["finished_at"]
        assert isinstance(record["worker_pid"], int)

    assert ok["state"] == "done"
    assert ok["outputs"] == ["registry_value"]
    assert ok["error"] is None
    assert failed["state"] == "failed"
    assert "ValueError" in failed["error"] and "boom from the worker" in failed["error"]
    assert cancelled["state"] == "cancelled"
    assert "KeyboardInterrupt" in cancelled["error"]
    assert cancelled["outputs"] == []


def test_notebook_cell_ids_are_recorded(run_notebook, workdir):
    """A notebook run through nbclient records the request's msg_id (nbclient 0.11 sends no cellId metadata; the
    cell id itself is checked with hand-made requests in the test above)."""
    db = workdir / "home" / "runs.sqlite"
    (cell,) = run_notebook(["%%thither\nnb_value = 1"])
    assert cell.error is None, cell.error
    assert wait_until(lambda: len(stored_runs(db)) == 1 and stored_runs(db)[0]["state"] == "done", 10), \
        stored_runs(db)
    (record,) = stored_runs(db)
    assert isinstance(record["msg_id"], str) and record["msg_id"], record
    assert record["outputs"] == ["nb_value"]


# -- 9. nothing listens on TCP ---------------------------------------------------------------------------


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", str(target))
        if match:
            inodes.add(match.group(1))
    return inodes


def table_inodes(pid: int, table: str, *, listening_only: bool = False) -> set[str]:
    path = Path(f"/proc/{pid}/net/{table}")
    if not path.exists():
        return set()
    lines = path.read_text().splitlines()
    if not lines:
        return set()
    found = set()
    if table.startswith("tcp"):
        # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...; st 0A is LISTEN
        for line in lines[1:]:
            cols = line.split()
            if len(cols) > 9 and (not listening_only or cols[3] == "0A"):
                found.add(cols[9])
    else:  # unix: Num RefCount Protocol Flags Type St Inode [Path]
        inode_col = lines[0].split().index("Inode")
        for line in lines[1:]:
            cols = line.split()
            if len(cols) > inode_col:
                found.add(cols[inode_col])
    return found


@pytest.mark.process_lifecycle
def test_worker_does_not_listen_on_tcp(live_kernel):
    kernel = live_kernel()
    pid = pid_of(kernel.run(PRINT_PID))
    assert running(pid)
    sockets = socket_inodes(pid)
    assert sockets, "the worker has no socket at all (its channel to the kernel should be one)"
    assert sockets & table_inodes(pid, "unix"), "the worker's channel is not a Unix socket"
    listening = table_inodes(pid, "tcp", listening_only=True) | table_inodes(pid, "tcp6", listening_only=True)
    assert not (sockets & listening), "the worker listens on TCP"
    # It holds no TCP socket at all.
    any_tcp = table_inodes(pid, "tcp") | table_inodes(pid, "tcp6")
    assert not (sockets & any_tcp)


# -- 10. protocol mismatch -------------------------------------------------------------------------------


class Tripwire:
    """Unpickling it creates a file: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def run_to_end(handle, timeout: float = 30) -> list[wire.Event]:
    events: list[wire.Event] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events.extend(handle.next_events(0.1))
        if events and events[-1].terminal:
            return events
    raise TimeoutError(f"no terminal event: {events}")


@pytest.mark.parametrize(
    ("field", "value"),
    [("python", "2.7"), ("protocol", 999), ("cloudpickle", "0.1.0")],
)
@pytest.mark.process_lifecycle
def test_protocol_mismatch_is_refused_before_unpickling(tmp_path, field, value):
    import cloudpickle

    backend = LocalBackend(max_workers=1, prewarm=False)
    options = RunOptions(backend="local")
    context = CellContext(cwd=str(tmp_path))
    source = "print(type(tripwire).__name__)"
    try:
        # Control: with a matching header the tripwire does fire, so its absence below means something.
        control_marker = tmp_path / "CONTROL"
        control = build_job(source, {"tripwire": Tripwire(control_marker)}, options, context)[0]
        events = run_to_end(backend.submit(control, options))
        assert isinstance(events[-1], wire.Result), events
        assert control_marker.exists()

        marker = tmp_path / "MARKER"
        job = build_job(source, {"tripwire": Tripwire(marker)}, options, context)[0]
        bad = dataclasses.replace(job, header=wire.JobHeader(run_id="x", **{field: value}))
        events = run_to_end(backend.submit(bad, options))
    finally:
        backend.close()

    terminal = events[-1]
    assert isinstance(terminal, wire.Error), events
    assert terminal.type_qualname == "ProtocolMismatch"
    here = {"python": wire.python_version(), "protocol": str(wire.PROTOCOL_VERSION),
            "cloudpickle": cloudpickle.__version__}[field]
    assert str(value) in terminal.message and here in terminal.message, terminal.message
    assert not any(isinstance(e, (wire.Started, wire.Stdout)) for e in events), events
    assert not marker.exists(), "the job body was unpickled despite the header mismatch"


@pytest.mark.process_lifecycle
def test_a_silent_same_user_connection_does_not_delay_a_worker_start(tmp_path):
    """A process of the same user that connects to the worker's socket during start-up and then says nothing is
    refused at once (its pid is not the worker's); the real worker still starts without waiting for it."""
    from mini_magic.backends.local.process import WorkerProcess, WorkerProfile
    from mini_magic.backends.local.runtime_dir import private_socket_dir

    socket_dir = private_socket_dir()
    intruders: list[socket.socket] = []
    stop = threading.Event()

    def connect_first() -> None:  # polls for the socket file and connects before the worker can
        while not stop.is_set():
            for name in os.listdir(socket_dir):
                if name.endswith(".sock"):
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        sock.connect(os.path.join(socket_dir, name))
                        intruders.append(sock)
                        return
                    except OSError:
                        sock.close()
            time.sleep(0.0005)

    intruder = threading.Thread(target=connect_first, daemon=True)
    intruder.start()
    started = time.monotonic()
    worker = WorkerProcess(WorkerProfile.from_env(dict(os.environ)), socket_dir=socket_dir, cwd=str(tmp_path),
                           on_events=lambda w, e: None, on_exit=lambda *a: None)
    took = time.monotonic() - started
    stop.set()
    try:
        assert intruders, "the test's intruder never connected: it proves nothing"
        assert took < 5, f"the worker took {took:.1f} s to start with a silent peer on its socket"
        assert intruders[0].recv(1) == b"", "the intruder's connection was not closed"
    finally:
        worker.close()
        for sock in intruders:
            sock.close()
        shutil.rmtree(socket_dir, ignore_errors=True)
