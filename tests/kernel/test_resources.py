"""--volume and --secret on the local backend: persistent directories, and secrets that stay out of the Job, the
run store and the cell's output."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SECRET = "s3cr3t-value-42"


def test_volumes_persist_across_runs_and_are_linked(run_notebook, workdir: Path) -> None:
    mount = workdir / "mnt" / "data"
    cells = run_notebook([
        f"%%thither --volume data:{mount}\nimport os\n"
        f"open(os.path.join(os.environ['MINI_MAGIC_VOLUME_DATA'], 'a.txt'), 'w').write('kept')\n"
        "where = os.environ['MINI_MAGIC_VOLUME_DATA']",
        f"%%thither --volume data:{mount} --env OTHER=1\nprint(open('{mount}/a.txt').read())",
        "%%thither --volume spare:/proc/not-allowed/spare\nimport os\nprint(os.path.isdir(os.environ['MINI_MAGIC_VOLUME_SPARE']))",
        "%%thither --volume bad-spec\nx = 1",
    ])
    first, second, unlinkable, bad = cells
    assert first.error is None and second.error is None, (first.outputs, second.outputs)
    assert second.stdout == "kept\n"  # another worker (other env profile) sees the same directory
    assert mount.is_symlink() and (workdir / "home" / "volumes" / "data" / "a.txt").read_text() == "kept"
    assert unlinkable.stdout == "True\n" and "cannot link /proc/not-allowed/spare" in unlinkable.stderr
    assert bad.error is not None and "NAME:/absolute/path" in bad.error["evalue"]


def test_secrets_reach_the_worker_but_not_the_output_or_the_run_store(run_notebook, workdir: Path) -> None:
    (workdir / ".env.api").write_text(f"# test secret\nAPI_TOKEN='{SECRET}'\n")
    cells = run_notebook([
        "%%thither --secret api\nimport os\ntoken = os.environ['API_TOKEN']\nprint('token is', token)\n"
        "ok = token == " + repr(SECRET),
        "print(ok, 'token' in globals())",
        "%%thither --secret api\nimport os\nraise ValueError('leaked ' + os.environ['API_TOKEN'])",
        "%%thither --secret missing\nx = 1",
        "%%thither\nimport os\nprint('API_TOKEN' in os.environ)",
    ], env={"MINI_MAGIC_SECRET_OTHER_KEY": "unused"})
    shown, check, failing, missing, without = cells
    assert shown.error is None, shown.outputs
    assert "token is ********" in shown.stdout and SECRET not in shown.stdout
    assert check.stdout == "True False\n"  # the value itself was intact in the worker
    assert "'token' was not brought back" in shown.stderr and "secret" in shown.stderr
    assert failing.error is not None and SECRET not in failing.error["evalue"]
    assert not any(SECRET in line for line in failing.error["traceback"])
    assert missing.error is not None and ".env.missing" in missing.error["evalue"]
    assert without.stdout == "False\n"  # a run without --secret gets a worker without it
    store = workdir / "home" / "runs.sqlite"
    with sqlite3.connect(store) as db:
        rows = " ".join(str(r) for r in db.execute("select * from runs"))
    assert "api" in rows and SECRET not in rows  # the secret's name is recorded, never its value


def test_secrets_from_environment_prefix(run_notebook) -> None:
    (cell,) = run_notebook(["%%thither --secret db\nimport os\nprint(os.environ['PASSWORD'] == 'hunter2-long')"],
                           env={"MINI_MAGIC_SECRET_DB_PASSWORD": "hunter2-long"})
    assert cell.stdout == "True\n", cell.outputs


def test_a_trailing_value_holding_a_secret_is_not_shown(run_notebook, workdir: Path) -> None:
    (workdir / ".env.api").write_text(f"API_TOKEN={SECRET}\n")
    shown, inside, check = run_notebook([
        "%%thither --secret api\nimport os\nos.environ['API_TOKEN']",
        "%%thither --secret api\nimport os\n{'token': os.environ['API_TOKEN'], 'n': 1}",
        "print(repr(_))",
    ])
    for cell in (shown, inside):
        assert cell.error is None, cell.outputs
        assert not cell.data("execute_result"), cell.outputs  # no Out[n] at all, not even a scrubbed one
        assert SECRET not in str(cell.outputs)
        assert "value of the cell's last expression was not brought back" in cell.stderr, cell.outputs
        assert "secret" in cell.stderr
    assert SECRET not in check.stdout


def test_output_written_just_before_a_crash_is_scrubbed(run_notebook, workdir: Path) -> None:
    """The kernel drains what a dead worker wrote but never forwarded: that text is scrubbed there too.

    The forced cells write while holding the GIL (a ``ctypes.PyDLL`` call does not release it, and a huge switch
    interval keeps it) and exit before the worker's reader thread can run, so the text is always left in the pipe
    for the kernel; the plain ones race the reader thread as a user's cell would."""
    (workdir / ".env.api").write_text(f"API_TOKEN={SECRET}\n")
    forced = (
        "%%thither --secret api\nimport ctypes, os, sys\nsys.setswitchinterval(1000)\n"
        "data = ('token ' + os.environ['API_TOKEN'] + '\\n').encode()\n"
        "ctypes.PyDLL(None).write(1, data, len(data))\nctypes.PyDLL(None).write(2, data, len(data))\nos._exit(1)"
    )
    plain = "%%thither --secret api\nimport os\nos.write(1, os.environ['API_TOKEN'].encode())\nos._exit(1)"
    cells = run_notebook([forced] * 3 + [plain] * 5, timeout=120)
    leaks = [i for i, cell in enumerate(cells) if SECRET in str(cell.outputs)]
    assert leaks == [], [cells[i].outputs for i in leaks]
    for cell in cells:
        assert cell.error is not None and cell.error["ename"] == "WorkerCrashed", cell.outputs
    for cell in cells[:3]:
        assert "token ********" in cell.stdout and "token ********" in cell.stderr, cell.outputs


def test_a_leftover_thread_s_output_is_scrubbed_from_the_worker_log(run_notebook, workdir: Path) -> None:
    """Output of a thread that outlives its run goes to the worker's log; a later crash shows the log's tail in
    the notebook and in the run store."""
    (workdir / ".env.api").write_text(f"API_TOKEN={SECRET}\n")
    cells = run_notebook([
        ("%%thither --secret api\nimport os, threading, time\n"
         "def later():\n    time.sleep(1)\n    print('late', os.environ['API_TOKEN'], flush=True)\n"
         "threading.Thread(target=later, daemon=True).start()"),
        "import time\ntime.sleep(3)",
        "%%thither --secret api\nimport os\nos._exit(3)",
    ], timeout=120)
    started, _, crashed = cells
    assert started.error is None, started.outputs
    assert crashed.error is not None and crashed.error["ename"] == "WorkerCrashed", crashed.outputs
    assert "late ********" in crashed.error["evalue"]  # the same worker's log, scrubbed
    assert SECRET not in str(crashed.outputs)
    with sqlite3.connect(workdir / "home" / "runs.sqlite") as db:
        rows = " ".join(str(r) for r in db.execute("select * from runs"))
    assert "late ********" in rows and SECRET not in rows  # the crash's error, as the run store keeps it


def test_a_value_too_short_to_scrub_is_named_not_scrubbed(run_notebook) -> None:
    (cell,) = run_notebook(["%%thither --secret pin\nimport os\nprint('pin', os.environ['CODE'])"],
                           env={"MINI_MAGIC_SECRET_PIN_CODE": "4711", "MINI_MAGIC_SECRET_PIN_TOKEN": SECRET})
    assert cell.error is None and cell.stdout == "pin 4711\n", cell.outputs
    assert "CODE" in cell.stderr and "shorter than 6 characters" in cell.stderr and "TOKEN" not in cell.stderr
    assert "4711" not in cell.stderr  # the note names the key, never the value
