"""`%%thither --backend modal` in a real kernel, driving the real modal client and the real container runtime
against the offline fake control plane. The containers cannot see the notebook's directory: local modules reach
them only inside the Job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_a_modal_cell_runs_like_a_local_one(fake_modal, run_notebook, workdir: Path) -> None:
    (workdir / "helpers.py").write_text("def scale(x):\n    return 10 * x\n")
    cells = run_notebook(
        [
            "import numpy as np\nfrom mini_magic import hither\ncalls = []\n"
            "@hither\ndef track(i): calls.append(i)\n"
            "data = np.arange(5)\ndef double(v): return 2 * v",
            "%%thither --backend modal --gpu L4 --timeout 600\n"
            "import os, helpers\nfrom tqdm import tqdm\n"
            "print('hello from', os.environ['MODAL_TASK_ID'])\n"
            "for i in tqdm(range(1000)): track(i)\n"
            "from IPython.display import display, HTML\n"
            "total = int(double(data).sum()) + helpers.scale(1)\n"
            "total",
            "print(total, calls == list(range(1000)))",
            "%%thither --backend modal\nx = 1\nraise ValueError(f'bad {x}')",
            "print('x' in globals())",
        ],
        env=fake_modal.client_env(),
        timeout=120,
    )
    setup, remote, check, failing, after = cells
    assert setup.error is None, setup.error
    assert remote.error is None, remote.error
    assert "hello from ta-" in remote.stdout
    assert remote.data("execute_result")[0]["text/plain"] == "30"
    assert check.stdout == "30 True\n"
    assert failing.error["ename"] == "ValueError" and failing.error["evalue"] == "bad 1"
    assert any("line 3" in line for line in failing.error["traceback"])
    assert after.stdout == "False\n"
    binds = fake_modal.requests("FunctionBindParams")
    assert any(b.function_options.resources.gpu_config.gpu_type == "L4" for b in binds)
    assert any(b.function_options.timeout_secs == 600 for b in binds)
    assert "QueuePut" in fake_modal.calls and "QueueGet" in fake_modal.calls


def test_interrupt_cancels_the_function_call_and_stops_the_container(fake_modal, live_kernel) -> None:
    kernel = live_kernel(env=fake_modal.client_env())
    before = len(fake_modal.state.cancellations)
    msg_id = kernel.submit("%%thither --backend modal\nimport time\nprint('started', flush=True)\ntime.sleep(60)")
    kernel.wait_for_stdout(msg_id, "started", timeout=60)
    kernel.interrupt()
    result = kernel.collect(msg_id, timeout=30)
    assert result.error is not None and result.error["ename"] == "KeyboardInterrupt", result.outputs
    # The cancel RPC goes out from a background thread: wait for the fake to have seen it and stopped the container.
    assert fake_modal.wait_for(lambda: len(fake_modal.state.cancellations) > before, timeout=15), fake_modal.calls
    assert fake_modal.state.cancellations[-1].terminate_containers

    def stopped():
        return [c for c in fake_modal.containers.values()
                if c.terminated_by and "FunctionCallCancel" in c.terminated_by and c.returncode is not None]

    assert fake_modal.wait_for(stopped, timeout=15), {k: (c.terminated_by, c.returncode)
                                                      for k, c in fake_modal.containers.items()}
    assert kernel.run("%%thither --backend modal\nprint('next cell works')", timeout=60).stdout == "next cell works\n"


def test_without_a_token_the_error_says_how_to_set_up(run_notebook, workdir: Path) -> None:
    empty_config = workdir / "modal.toml"
    empty_config.write_text("")
    started = time.monotonic()
    (cell,) = run_notebook(["%%thither --backend modal\nx = 1"],
                           env={"MODAL_CONFIG_PATH": str(empty_config), "MODAL_TOKEN_ID": "", "MODAL_TOKEN_SECRET": ""})
    assert cell.error is not None and "modal token new" in cell.error["evalue"]
    assert time.monotonic() - started < 60  # liveness: no minute of client retries


def test_an_unknown_image_name_is_a_clear_error(fake_modal, run_notebook) -> None:
    (cell,) = run_notebook(["%%thither --backend modal --image missing_image\nx = 1"], env=fake_modal.client_env())
    assert cell.error is not None and "--image missing_image" in cell.error["evalue"]


def test_hither_calls_arrive_in_order_with_few_queue_operations(fake_modal, run_notebook) -> None:
    mark = fake_modal.mark()
    started = time.monotonic()
    cells = run_notebook(
        [
            "from mini_magic import hither\ngot = []\n@hither\ndef track(i): got.append(i)",
            "%%thither --backend modal --out ''\nimport time\nfor i in range(100_000):\n    track(i)\n"
            "    if i % 5000 == 0: time.sleep(0.1)",
            "print(got == list(range(100_000)))",
        ],
        env=fake_modal.client_env(),
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert cells[2].stdout == "True\n", [c.outputs for c in cells]
    queue_ops = [c for c in fake_modal.calls_since(mark) if c in ("QueuePut", "QueueGet")]
    # Batching bounds the queue traffic by time, not by the number of calls: a few operations a second.
    assert 0 < len(queue_ops) <= 20 * elapsed, (len(queue_ops), elapsed)


def test_volumes_and_secrets_on_modal(fake_modal, run_notebook, workdir: Path) -> None:
    secret = "modal-s3cr3t-77"
    fake_modal.add_secret("api", {"API_TOKEN": secret})
    (workdir / ".env.api").write_text(f"API_TOKEN={secret}\n")  # a local mirror is not needed, but allowed
    (cell,) = run_notebook(
        ["%%thither --backend modal --volume vol:/mnt/vol --secret api --out ''\nimport os\n"
         "print('volume at', os.environ['MINI_MAGIC_VOLUME_VOL'])\nprint('token', os.environ['API_TOKEN'])"],
        env=fake_modal.client_env(),
        timeout=120,
    )
    assert cell.error is None, cell.outputs
    assert "volume at /mnt/vol" in cell.stdout
    assert "token ********" in cell.stdout and secret not in cell.stdout
    assert "VolumeGetOrCreate" in fake_modal.calls and "VolumeCommit" in fake_modal.calls
    assert "SecretGetOrCreate" in fake_modal.calls


def test_a_modal_secret_is_scrubbed_in_the_container_without_a_local_mirror(fake_modal, run_notebook) -> None:
    """The secret's values exist only in the container: it scrubs them itself from every event and from what it
    logs, for its whole life (the late print comes from a thread that outlived its run)."""
    secret = "vault-only-s3cr3t-91"
    fake_modal.add_secret("vault", {"VAULT_TOKEN": secret})
    mark = len(fake_modal.containers)
    printed, shown, failing, _, missing = run_notebook([
        ("%%thither --backend modal --secret vault --out ''\nimport os, threading, time\n"
         "print('token', os.environ['VAULT_TOKEN'])\n"
         "def late():\n    time.sleep(1)\n    print('late', os.environ['VAULT_TOKEN'], flush=True)\n"
         "threading.Thread(target=late, daemon=True).start()"),
        "%%thither --backend modal --secret vault\nimport os\nos.environ['VAULT_TOKEN']",
        "%%thither --backend modal --secret vault\nimport os\nraise ValueError('leaked ' + os.environ['VAULT_TOKEN'])",
        "import time\ntime.sleep(2)",
        "%%thither --backend modal --secret nowhere\nx = 1",
    ], env=fake_modal.client_env(), timeout=120)
    assert printed.error is None and "token ********" in printed.stdout, printed.outputs
    assert shown.error is None and not shown.data("execute_result") and "secret" in shown.stderr, shown.outputs
    assert failing.error is not None and "leaked ********" in failing.error["evalue"], failing.outputs
    assert secret not in str([printed.outputs, shown.outputs, failing.outputs])
    logs = "".join(c.stdout + c.stderr for c in list(fake_modal.containers.values())[mark:])
    assert "late ********" in logs and secret not in logs
    assert missing.error is not None and "--secret nowhere" in missing.error["evalue"], missing.outputs


@pytest.mark.parametrize("graceful", [False, True], ids=["killed", "shut-down"])
def test_a_detached_run_is_reattached_from_a_new_kernel(fake_modal, live_kernel, graceful: bool) -> None:
    first = live_kernel(env=fake_modal.client_env())
    started = first.run("%%thither --backend modal --bg --detach --name job\nimport time\ntime.sleep(2)\nanswer = 42",
                        timeout=60)
    assert started.error is None, started.outputs
    run_id = first.run("print(job.run_id)").stdout.strip()
    assert first.run("%%thither --backend modal --detach\nx = 1").error["evalue"].startswith("--detach needs --bg")
    if graceful:
        first.km.shutdown_kernel(now=False)  # it ends its other runs, never a detached one
    first.close()  # the kernel goes away while the detached run is still running

    second = live_kernel(env=fake_modal.client_env())
    listed = second.run("%thither runs --all").stdout  # its dead kernel is not what decides how it ends
    assert next(line for line in listed.splitlines() if line.startswith(run_id)).split()[1] in ("queued", "running")
    attached = second.run(f"%thither attach {run_id}", timeout=90)
    assert attached.error is None, attached.outputs
    assert "not replayed" in attached.stdout and "answer" in attached.stdout
    assert second.run("print(answer)").stdout == "42\n"
    runs = second.run("%thither runs --all").stdout
    assert run_id in runs and "done" in runs.split(run_id)[1].splitlines()[0]


def test_an_unreachable_server_is_reported_within_seconds(run_notebook, workdir: Path) -> None:
    started = time.monotonic()
    (cell,) = run_notebook(["%%thither --backend modal\nx = 1"], env={
        "MODAL_SERVER_URL": "http://127.0.0.1:9", "MODAL_TOKEN_ID": "ak-dummy", "MODAL_TOKEN_SECRET": "as-dummy",
        "MODAL_CONFIG_PATH": str(workdir / "none.toml")})
    assert cell.error is not None and "did not answer within 5 s" in cell.error["evalue"], cell.error
    assert time.monotonic() - started < 45  # liveness bound (kernel start included), not the client's ~1 min


def test_kernel_shutdown_stops_the_apps_and_their_containers(fake_modal, live_kernel) -> None:
    kernel = live_kernel(env=fake_modal.client_env())
    before = set(fake_modal.containers)
    assert kernel.run("%%thither --backend modal\nprint('ran')", timeout=60).stdout == "ran\n"
    mine = [c for task, c in fake_modal.containers.items() if task not in before]
    assert mine
    kernel.km.shutdown_kernel(now=False)  # a normal shutdown: the extension's atexit closes the apps
    assert fake_modal.wait_for(lambda: all(c.returncode is not None for c in mine), timeout=30)
    assert "AppClientDisconnect" in fake_modal.calls or "AppStop" in fake_modal.calls
