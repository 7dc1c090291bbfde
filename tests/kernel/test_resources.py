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
