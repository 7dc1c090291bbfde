"""Guards, ``invoke`` and one-call pipelines from plain Python scripts (no kernel), on the local backend; the same
scripts run on the Modal fake control plane in tests/modal/test_guards_invoke_on_modal.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

TRAIN = '''
import os
from helpers import scale


def train_model(epochs, lr=0.1):
    print(f"training {epochs} epochs")
    return {"epochs": epochs, "score": scale(epochs) * lr}


def broken(x):
    raise ValueError(f"bad {x}")


def not_json():
    return {1, 2}
'''

HELPERS = "def scale(x):\n    return x * 3\n"

GUARDS = r'''
import contextlib, json, os, sys, traceback
from mini_magic import guard, thither

BACKEND, LOG = sys.argv[1], sys.argv[2]


def note(text):
    with open(LOG, "a") as f:
        f.write(text + "\n")


def taken():
    with open(LOG) as f:
        lines = f.read().splitlines()
    os.remove(LOG)
    return lines


@guard
def outer():
    note("outer enter")
    yield
    note("outer exit")


def before():
    note("before")


def after(exc):
    note(f"after {type(exc).__name__ if exc else None}")


middle = guard(before=before, after=after)


@contextlib.contextmanager
def per_function():
    note("function enter")
    try:
        yield
    finally:
        note("function exit")


@thither(backend=BACKEND, timeout=120, guards=[per_function])
def body(fail):
    note("body")
    if fail:
        raise ValueError("body failed")
    return 1


@contextlib.contextmanager
def unseeded():
    raise RuntimeError("no seed")
    yield


@thither(backend=BACKEND, timeout=120, guards=[unseeded])
def never():
    note("never")


out = {"ok": body(False), "log_ok": taken()}
try:
    body(True)
except ValueError as exc:
    out["failed"] = str(exc)
out["log_failed"] = taken()
try:
    never()
except Exception as exc:
    out["guard_error"] = [type(exc).__name__, str(exc)]
out["log_guard_error"] = taken()
middle.remove()
outer.remove()
body(False)
out["log_removed"] = taken()
out["map"] = body.map([False] * 100)  # items travel in batches: each call is still guarded on its own
out["log_map"] = taken()
print("RESULT " + json.dumps(out))
'''

INVOKE = r'''
import json, sys
from mini_magic import invoke, invoke_async

BACKEND, ROOT = sys.argv[1], sys.argv[2]
out = {"invoke": invoke("train.py", "train_model", [3], {"lr": 0.5}, code_root=ROOT, backend=BACKEND, timeout=120)}
task = invoke_async("train.py", "train_model", kwargs={"epochs": 2}, code_root=ROOT, backend=BACKEND, timeout=120)
out["async"] = [task.get_result(120), task.status]


def error_of(call):
    try:
        call()
    except Exception as exc:
        return [type(exc).__name__, isinstance(exc, RuntimeError), str(exc), getattr(exc, "remote_traceback", "")]


out["remote_error"] = error_of(lambda: invoke("train.py", "broken", [7], code_root=ROOT, backend=BACKEND))
out["result_not_json"] = error_of(lambda: invoke("train.py", "not_json", code_root=ROOT, backend=BACKEND))
out["arg_not_json"] = error_of(lambda: invoke("train.py", "train_model", [{1, 2}], code_root=ROOT))
out["too_big"] = error_of(lambda: invoke("train.py", "train_model", ["x" * (11 * 1024 * 1024)], code_root=ROOT))
out["no_function"] = error_of(lambda: invoke("train.py", "nope", code_root=ROOT))
out["no_module"] = error_of(lambda: invoke("missing.py", "train_model", code_root=ROOT))
out["no_root"] = error_of(lambda: invoke("train.py", "train_model", code_root=ROOT + "/nowhere"))
out["unknown_param"] = error_of(lambda: invoke("train.py", "train_model", [1], code_root=ROOT, gpus="L4"))
print("RESULT " + json.dumps(out))
'''

PIPELINE = r'''
import json, os, sys
from mini_magic import hither, thither

BACKEND, MODE, CACHE = sys.argv[1], sys.argv[2], sys.argv[3]
events = []


@hither
def progress(step, value):
    events.append([step, value])


def load(n):
    return list(range(n))


def square(x):
    return x * x


@thither(backend=BACKEND, timeout=120)
def featurize(chunk):
    return [square(x) for x in chunk]


def cached(key, compute):
    """The user's own disk cache: nothing of mini_magic's."""
    path = os.path.join(CACHE, key + ".json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f), True
    value = compute()
    with open(path, "w") as f:
        json.dump(value, f)
    return value, False


def pipeline(n, report):
    data = load(n)
    report("loaded", len(data))
    chunks = [data[i:i + 5] for i in range(0, n, 5)]
    features, hit = cached(f"features-{n}", lambda: [f for part in featurize.map(chunks) for f in part])
    report("features", [len(features), hit])
    total = sum(features)
    report("total", total)
    return total


if MODE == "local":
    result = pipeline(20, lambda step, value: events.append([step, value]))
else:
    result = thither(backend=BACKEND, timeout=120)(pipeline)(20, progress)
print("RESULT " + json.dumps({"result": result, "events": events}))
'''


def run_script(tmp_path: Path, name: str, text: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    script = tmp_path / f"{name}.py"
    script.write_text(text)
    env = {**os.environ, "MINI_MAGIC_HOME": str(tmp_path / "home")}
    env.pop("MINI_MAGIC_BACKEND", None)
    proc = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def check_guards(tmp_path: Path, backend: str) -> None:
    out = run_script(tmp_path, "guards", GUARDS, backend, str(tmp_path / "guard.log"))
    assert out["ok"] == 1
    # the first registered is outermost: global guards in order, then the function's
    assert out["log_ok"] == ["outer enter", "before", "function enter", "body", "function exit", "after None",
                             "outer exit"]
    assert out["failed"] == "body failed"
    assert out["log_failed"] == ["outer enter", "before", "function enter", "body", "function exit",
                                 "after ValueError"]  # outer's code after its yield does not run on an error
    assert out["guard_error"] == ["GuardFailed", "guard 'unseeded' failed before the run: RuntimeError: no seed"]
    assert "never" not in out["log_guard_error"]
    assert out["log_removed"] == ["function enter", "body", "function exit"]
    assert out["map"] == [1] * 100
    assert sorted(out["log_map"]) == sorted(["function enter", "body", "function exit"] * 100), out["log_map"]


def check_invoke(tmp_path: Path, backend: str) -> None:
    root = tmp_path / "code"
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    (root / "helpers.py").write_text(HELPERS)
    out = run_script(tmp_path, "invoker", INVOKE, backend, str(root))
    assert out["invoke"] == {"epochs": 3, "score": 4.5}
    assert out["async"] == [{"epochs": 2, "score": 0.6000000000000001}, "done"]
    name, is_runtime_error, message, remote = out["remote_error"]
    assert (name, is_runtime_error, message) == ("RemoteExecutionFailed", True,
                                                 "Remote execution failed: ValueError: bad 7")
    assert 'train.py", line 12, in broken' in remote and 'raise ValueError(f"bad {x}")' in remote, remote
    assert out["result_not_json"][2].startswith("Remote execution failed: TypeError: train.not_json returned a set")
    assert out["arg_not_json"][:2] == ["TypeError", False] and "args[0] (set) is not JSON-serializable" in \
        out["arg_not_json"][2] and "pass the path" in out["arg_not_json"][2]
    assert "over the 10 MB limit" in out["too_big"][2]
    assert out["no_function"][0] == "ThitherUsageError" and "no function 'nope'" in out["no_function"][2]
    assert "no Python file 'missing.py'" in out["no_module"][2]
    assert "is not a directory" in out["no_root"][2]
    assert "unknown option gpus=" in out["unknown_param"][2]


def check_pipeline(tmp_path: Path, backend: str) -> dict[str, Any]:
    cache = tmp_path / "cache"
    cache.mkdir()
    (tmp_path / "local-cache").mkdir(exist_ok=True)
    local = run_script(tmp_path, "pipeline", PIPELINE, backend, "local", str(tmp_path / "local-cache"))
    remote = run_script(tmp_path, "pipeline", PIPELINE, backend, "remote", str(cache))
    assert remote == local == {"result": sum(x * x for x in range(20)),
                               "events": [["loaded", 20], ["features", [20, False]], ["total", 2470]]}
    again = run_script(tmp_path, "pipeline", PIPELINE, backend, "remote", str(cache))
    assert again["events"][1] == ["features", [20, True]]  # the user's own cache, hit on the second run
    return remote


def test_guards_run_around_calls_in_order(tmp_path: Path) -> None:
    check_guards(tmp_path, "local")


def test_invoke_runs_a_function_of_a_file(tmp_path: Path) -> None:
    check_invoke(tmp_path, "local")


def test_a_pipeline_runs_in_one_call_with_the_same_results_and_callbacks(tmp_path: Path) -> None:
    check_pipeline(tmp_path, "local")


def test_the_command_line_invokes_and_reports(tmp_path: Path) -> None:
    root = tmp_path / "code"
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    (root / "helpers.py").write_text(HELPERS)
    env = {**os.environ, "MINI_MAGIC_HOME": str(tmp_path / "home")}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mini_magic", "invoke", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120)

    done = cli("train.py", "train_model", "--kwargs", '{"epochs": 3}', "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["training 3 epochs", '{"epochs": 3, "score": 0.9}']
    failed = cli("train.py", "broken", "--args", "[5]")
    assert failed.returncode == 1 and failed.stdout == ""
    assert "Traceback" in failed.stderr and failed.stderr.rstrip().endswith("Remote execution failed: ValueError: bad 5")
    bad = cli("train.py", "nope")
    assert bad.returncode == 2 and "no function 'nope'" in bad.stderr
