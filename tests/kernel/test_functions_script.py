"""``@thither`` functions from a plain Python script: no kernel, no IPython shell, a real separate process.

The script exercises every way of calling (blocking, streamed generator, awaited, spawned, gather, map, starmap),
errors, cancellation and the run registry, and prints what it saw as JSON; the same script runs on the Modal fake
control plane (tests/modal/test_functions_on_modal.py) with ``backend="modal"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SCRIPT = r'''
import asyncio, json, os, sys, threading, time, traceback
from mini_magic import FunctionCall, RunCancelled, RunTimeout, gather, hither, thither
from mini_magic.runtime import script_runtime

BACKEND, GATE = sys.argv[1], sys.argv[2]
SCALE = 10
seen = []


@hither
def track(value):
    seen.append(value)


@thither(backend=BACKEND, timeout=120)
def scaled(x, offset=0):
    print(f"scaling {x}")
    return x * SCALE + offset


@thither(backend=BACKEND, timeout=120)
def where():
    return os.getpid()


@thither(backend=BACKEND, timeout=120)
def nested(n):
    """A @thither call inside a worker runs in that worker; a map or spawn there runs on its threads."""
    return [where() == os.getpid(), scaled.map(range(n)), gather(scaled.spawn(1), scaled.spawn(2)),
            list(tokens.spawn(3, GATE).stream())]


@thither(backend=BACKEND, timeout=120)
def tokens(n, gate):
    yield 0
    while not os.path.exists(gate):  # the caller creates it once it has item 0: items stream as produced
        time.sleep(0.01)
    for i in range(1, n):
        yield i
    return "end"


@thither(backend=BACKEND, timeout=120)
def endless():
    i = 0
    while True:
        yield i
        i += 1
        time.sleep(0.01)


@thither(backend=BACKEND, timeout=120)
async def later(x):
    await asyncio.sleep(0.05)
    return x + 1


@thither(backend=BACKEND, timeout=120)
def fails(x):
    if x == 3:
        raise ValueError(f"bad {x}")
    return x


@thither(backend=BACKEND, timeout=120)
def reports(n, callback):
    for i in range(n):
        callback(i)
    return n


@thither(backend=BACKEND, timeout=120)
def sleeps():
    print("sleeping", flush=True)
    time.sleep(600)


@thither(backend=BACKEND, timeout=120)
def span(i):
    start = time.time()
    time.sleep(0.5)
    return [os.getpid(), start, time.time()]


@thither(backend=BACKEND, timeout=1)
def too_slow():
    time.sleep(600)


def error_of(call):
    try:
        call()
    except BaseException as exc:
        return [type(exc).__name__, str(exc), "".join(traceback.format_exception(exc))]
    return None


out = {}
out["call"] = scaled(4, offset=2)
out["local"] = scaled.local(1)

stream = tokens(3, GATE)
items = [next(stream)]
open(GATE, "w").close()
try:
    while True:
        items.append(next(stream))
except StopIteration as stop:
    out["returned"] = stop.value
out["items"] = items
out["again"] = error_of(lambda: list(stream))
for item in endless():
    if item == 2:
        break  # stops the remote generator, as it would close a local one

async def both():
    return await asyncio.gather(later(1), later(2))


out["awaited"] = asyncio.run(both())

call = scaled.spawn(5)
out["spawned"] = [isinstance(call, FunctionCall), call.result(60), call.state]
out["gathered"] = gather(scaled.spawn(1), scaled.spawn(2), timeout=60)
streamed = tokens.spawn(3, GATE)
out["spawn_stream"] = [list(streamed.stream()), streamed.result(60), error_of(lambda: streamed.stream())[0]]
out["gather_error"] = error_of(lambda: gather(fails.spawn(3), scaled.spawn(1)))
slow = sleeps.spawn()
while slow.state != "running":
    time.sleep(0.05)
slow.cancel()
out["cancelled"] = [error_of(lambda: slow.result(60))[0], slow.state]

out["map"] = scaled.map(range(20))
out["spans"] = span.map(range(3))
out["starmap"] = scaled.starmap([(1, 1), (2, 2)])
out["map_exceptions"] = [repr(r) for r in fails.map(range(6), return_exceptions=True)]
out["map_error"] = error_of(lambda: fails.map(range(6)))
out["nested"] = nested(5)
out["error"] = error_of(lambda: fails(3))
out["unsendable"] = error_of(lambda: scaled(threading.Lock()))
out["map_unsendable"] = error_of(lambda: scaled.map([1, threading.Lock()]))
# Many items travel in batches (several calls per job): the same results, item numbers and progress.
out["batched"] = scaled.map(range(300))
out["batched_error"] = error_of(lambda: fails.map(range(100)))
out["batched_unsendable"] = error_of(lambda: scaled.map([1] * 50 + [threading.Lock()] + [1] * 49))
out["timeout"] = error_of(too_slow)[:2]
out["hither"] = [reports(3, track), seen]

records = script_runtime().registry.recent(100)
out["records"] = [[r.label, r.state.value, r.progress] for r in records]
print("RESULT " + json.dumps(out))
'''


def run_script(tmp_path: Path, backend: str, timeout: float = 240) -> tuple[dict[str, Any], str, str]:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "MINI_MAGIC_HOME": str(tmp_path / "home")}
    env.pop("MINI_MAGIC_BACKEND", None)
    proc = subprocess.run([sys.executable, str(script), backend, str(tmp_path / "gate")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), proc.stdout, proc.stderr


def check_script(out: dict[str, Any], stdout: str, stderr: str) -> None:
    """What the script must see, on any backend."""
    assert out["call"] == 42 and out["local"] == 10
    assert "scaling 4\n" in stdout  # the call's output streams into the caller's stdout
    assert out["items"] == [0, 1, 2] and out["returned"] == "end"
    assert out["again"][0] == "ThitherUsageError" and "already consumed" in out["again"][1]
    assert out["awaited"] == [2, 3]
    assert out["spawned"] == [True, 50, "done"]
    assert out["gathered"] == [10, 20]
    assert out["gather_error"][:2] == ["ValueError", "bad 3"]
    assert out["cancelled"] == ["RunCancelled", "cancelled"]
    assert out["map"] == [10 * i for i in range(20)]
    assert out["starmap"] == [11, 22]
    spans = out["spans"]  # fanned out: the items ran at the same time, in different processes (or containers)
    assert len({pid for pid, _, _ in spans}) == 3, spans
    assert max(start for _, start, _ in spans) < min(end for _, _, end in spans), spans
    assert out["map_exceptions"] == ["0", "1", "2", "ValueError('bad 3')", "4", "5"]
    assert out["map_error"][:2] == ["ValueError", "bad 3"]
    assert out["nested"] == [True, [0, 10, 20, 30, 40], [10, 20], [0, 1, 2]]
    assert out["spawn_stream"] == [[0, 1, 2], "end", "ThitherUsageError"]
    name, message, text = out["error"]
    assert (name, message) == ("ValueError", "bad 3")
    assert 'raise ValueError(f"bad {x}")' in text and "script.py" in text  # the function's own source line
    name, message, _ = out["unsendable"]
    assert name == "CaptureError" and "argument args[0] (lock)" in message and "inside the function" in message
    name, message, _ = out["map_unsendable"]
    assert name == "CaptureError" and message.startswith("scaled.map, item 1: cannot send argument args[0]")
    assert out["timeout"][0] == "RunTimeout" and "timeout=" in out["timeout"][1]
    assert out["batched"] == [10 * i for i in range(300)]
    name, message, text = out["batched_error"]
    assert (name, message) == ("ValueError", "bad 3") and 'raise ValueError(f"bad {x}")' in text
    if sys.version_info >= (3, 11):
        assert "fails.map: item 3 failed" in text, text
    assert "mini_magic_item" not in text
    name, message, _ = out["batched_unsendable"]
    assert name == "CaptureError" and message.startswith("scaled.map, item 50: cannot send argument args[0]"), message
    assert out["hither"] == [3, [0, 1, 2]]
    records = out["records"]
    assert all(state in ("done", "failed", "cancelled") for _, state, _ in records), records
    maps = [r for r in records if r[0] == "scaled.map(20 items)"]
    assert len(maps) == 1 and maps[0][1] == "done" and maps[0][2]["n"] == 20 == maps[0][2]["total"], maps
    assert not any(label.startswith("scaled(") and "item" in label for label, _, _ in records)
    assert sum(1 for r in records if r[0] == "fails.map(6 items)" and r[1] == "failed") == 1, records
    assert sum(1 for r in records if r[0].startswith("endless(") and r[1] == "cancelled") == 1, records
    assert sum(1 for r in records if r[0].startswith("unsendable")) == 0
    batched = [r for r in records if r[0] == "scaled.map(300 items)"]
    assert len(batched) == 1 and batched[0][1] == "done" and batched[0][2]["n"] == 300 == batched[0][2]["total"]
    assert sum(1 for r in records if r[0] == "fails.map(100 items)" and r[1] == "failed") == 1, records
    assert len(records) == 23, records  # one per call, one per map; nothing for the calls that never ran


def test_a_plain_script_calls_thither_functions_every_way(tmp_path: Path) -> None:
    out, stdout, stderr = run_script(tmp_path, "local")
    check_script(out, stdout, stderr)
