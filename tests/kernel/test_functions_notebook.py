"""``@thither`` functions in a real notebook kernel (local backend): output, displays, tqdm bars and hither callbacks
land in the calling cell; a map is one run; calls inside a worker run there; bad input is refused clearly."""

from __future__ import annotations

import json
import re
import sqlite3
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SECRET = "s3cr3t-function-value"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

SETUP = '''
import asyncio, json, os, threading, time
from mini_magic import RunCancelled, gather, hither, thither
from mini_magic.extension import state_of
registry = state_of(get_ipython()).registry
SCALE = 10

@thither
def scaled(x):
    print(f"scaling {x}")
    return x * SCALE

@thither
def where():
    return os.getpid()
'''


def cell(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def ok(result: Any) -> Any:
    assert result.error is None, "\n".join(result.error.get("traceback", [])) if result.error else None
    return result


def test_calls_stream_into_the_calling_cell(run_notebook) -> None:
    cells = run_notebook([
        SETUP,
        "SCALE = 100\nprint(scaled(2))",
        cell('''
            @thither
            def shows(n):
                from IPython.display import Markdown, display
                from tqdm.auto import tqdm
                display(Markdown("**from the worker**"))
                for _ in tqdm(range(n), desc="steps"):
                    time.sleep(0.01)
                return n
            shows(5)
        '''),
        cell('''
            losses = []
            @hither
            def track(value):
                losses.append(value)
            @thither
            def train(epochs, track):
                for epoch in range(epochs):
                    track(epoch / 2)
                return "trained"
            print(train(3, track), losses)
        '''),
        cell('''
            @thither
            def tokens(n):
                for i in range(n):
                    yield i * SCALE
            for token in tokens(3):
                print("got", token)
        '''),
        cell('''
            @thither
            async def later(x):
                await asyncio.sleep(0.01)
                return x + 1
            print(await later(1), await asyncio.gather(later(2), later(3)))
        '''),
        cell('''
            @thither
            def slow():
                time.sleep(1.5)
                return "slept"
            slow()
        '''),
    ], timeout=120)
    ok(cells[0])
    assert ok(cells[1]).stdout == "scaling 2\n200\n"  # the notebook's SCALE when called, output in the cell
    shows = ok(cells[2])
    # Not necessarily first: the worker makes IPython's shell at its first display, and on a slow machine the run's
    # panel (shown once a run has lasted PANEL_DELAY) can come before it.
    assert any({"text/markdown": "**from the worker**"}.items() <= d.items() for d in shows.data("display_data")), \
        shows.outputs
    bars = [d for d in shows.data("display_data") if WIDGET_VIEW in d]
    assert bars and any("steps" in d.get("text/plain", "") for d in bars), shows.outputs
    assert shows.data("execute_result") == [{"text/plain": "5"}]
    assert ok(cells[3]).stdout == "trained [0.0, 0.5, 1.0]\n"
    assert ok(cells[4]).stdout == "got 0\ngot 100\ngot 200\n"
    assert ok(cells[5]).stdout == "2 [3, 4]\n"
    slow = ok(cells[6])
    assert slow.data("execute_result") == [{"text/plain": "'slept'"}]
    panels = [d for d in slow.data("display_data") if WIDGET_VIEW in d]
    assert panels and "done" in panels[0]["text/plain"], slow.outputs  # the run's panel, with a text fallback


def test_a_map_is_one_run_and_calls_in_a_worker_run_there(run_notebook) -> None:
    cells = run_notebook([
        SETUP,
        cell('''
            @thither
            def inc(x):
                return x + 1
            before = len(registry.recent(2000))
            results = inc.map(range(1000))
            records = registry.recent(2000)
            print(json.dumps([results == list(range(1, 1001)), len(records) - before, records[0].label,
                              records[0].state.value, records[0].progress]))
        '''),
        "%thither runs 3",
        cell('''
            %%thither
            inner = os.getpid()
            same_worker = where() == inner
            mapped = scaled.map(range(3))
        '''),
        "print(same_worker, mapped)",
    ], timeout=180)
    ok(cells[0])
    results, added, label, state, progress = json.loads(ok(cells[1]).stdout)
    assert results is True and added == 1, cells[1].stdout  # a 1,000-item map adds one record, not 1,000
    assert (label, state, progress) == ("inc.map(1000 items)", "done", {"n": 1000, "total": 1000, "desc": "inc.map"})
    assert "inc.map(1000 items)" in ok(cells[2]).stdout
    ok(cells[3])
    assert ok(cells[4]).stdout == "True [0, 10, 20]\n"


def test_bad_input_is_refused_clearly_and_loses_nothing(run_notebook, workdir: Path) -> None:
    (workdir / ".env.api").write_text(f"API_TOKEN='{SECRET}'\n")
    mount = workdir / "mnt" / "store"
    cells = run_notebook([
        SETUP,
        "@thither(gpus='L4')\ndef wrong():\n    pass",
        "@thither(out='x')\ndef wrong():\n    pass",
        "value = 1\nlock = threading.Lock()\nvalue = scaled(lock)",
        "print(value)",
        cell('''
            @thither
            def sleeps():
                time.sleep(600)
            call = sleeps.spawn()
            call.cancel()
            try:
                call.result(30)
            except RunCancelled as exc:
                print("RunCancelled:", exc, call.state)
        '''),
        cell(f'''
            @thither(secrets=["api"], volumes=["store:{mount}"])
            def uses_resources():
                token = os.environ["API_TOKEN"]
                print("token is", token)
                with open(os.path.join(os.environ["MINI_MAGIC_VOLUME_STORE"], "kept.txt"), "w") as f:
                    f.write("kept")
                return len(token)
            print(uses_resources())
        '''),
        "@thither(secrets=['api'])\ndef leaks():\n    return os.environ['API_TOKEN']\nleaked = leaks()",
    ], timeout=120)
    ok(cells[0])
    assert cells[1].error["ename"] == "ThitherUsageError" and "unknown option gpus=" in cells[1].error["evalue"]
    assert "the options are: backend, gpu, timeout" in cells[1].error["evalue"]
    assert cells[2].error["ename"] == "ThitherUsageError" and "out= is not an option of a function" in \
        cells[2].error["evalue"]
    error = cells[3].error
    assert error["ename"] == "CaptureError" and "argument args[0] (lock)" in error["evalue"], error
    assert ok(cells[4]).stdout == "1\n"
    assert re.fullmatch(r"RunCancelled: the run was cancelled \(.*\); nothing was returned\. cancelled\n",
                        ok(cells[5]).stdout), cells[5].stdout
    resources = ok(cells[6])
    assert SECRET not in resources.stdout and "token is" in resources.stdout
    assert resources.stdout.endswith(f"{len(SECRET)}\n")
    assert (workdir / "home" / "volumes" / "store" / "kept.txt").read_text() == "kept"
    assert cells[7].error is not None and SECRET not in json.dumps(cells[7].outputs)
    time.sleep(0.5)  # the run store is written behind
    with sqlite3.connect(workdir / "home" / "runs.sqlite") as db:
        rows = json.dumps(db.execute("SELECT * FROM runs").fetchall())
    assert SECRET not in rows


@pytest.mark.kernel_interrupt
def test_an_interrupt_stops_every_call_of_a_map_and_leaves_nothing(live_kernel) -> None:
    kernel = live_kernel()
    ok(kernel.run(SETUP))
    ok(kernel.run(cell('''
        @thither
        def nap(i):
            print(f"item {i} pid {os.getpid()}", flush=True)
            time.sleep(600)
    ''')))
    msg_id = kernel.submit("naps = nap.map(range(12))")
    kernel.wait_for_stdout(msg_id, "item", timeout=60)
    time.sleep(1.0)
    kernel.interrupt()
    interrupted = kernel.collect(msg_id, timeout=60)
    assert interrupted.error is not None and interrupted.error["ename"] == "KeyboardInterrupt", interrupted.outputs
    assert "nap.map was interrupted" in interrupted.error["evalue"] + "".join(interrupted.error["traceback"])
    after = json.loads(ok(kernel.run(cell('''
        rec = registry.recent(1)[0]
        again = scaled.map(range(8))  # the pool is not wedged: every worker the map held is free again
        print(json.dumps([rec.label, rec.state.value, "naps" in globals(), again,
                          [r.state.value for r in registry.active()]]))
    '''), timeout=60)).stdout.splitlines()[-1])
    label, state, assigned, again, active = after
    assert (label, state, assigned) == ("nap.map(12 items)", "cancelled", False)
    assert again == [10 * i for i in range(8)] and active == []


def test_guards_wrap_cells_globally_and_by_name(run_notebook) -> None:
    cells = run_notebook([
        cell('''
            import contextlib
            from mini_magic import guard
            @guard
            def seeded():
                import random
                random.seed(1234)
                yield
            @contextlib.contextmanager
            def logged():
                print("cell guard enter")
                yield
                print("cell guard exit")
        '''),
        "%%thither --guard logged\nimport random\nvalue = random.random()\nprint('body')",
        "import random\nrandom.seed(1234)\nprint(value == random.random())",
        "%%thither --guard missing\nx = 1",
        "seeded.remove()\nprint('x' in globals())",
    ])
    ok(cells[0])
    assert ok(cells[1]).stdout == "cell guard enter\nbody\ncell guard exit\n"
    assert ok(cells[2]).stdout == "True\n"  # the global guard seeded the worker's RNG before the cell ran
    assert cells[3].error["ename"] == "ThitherUsageError" and "--guard missing: no guard named 'missing'" in \
        cells[3].error["evalue"]
    assert ok(cells[4]).stdout == "False\n"


def test_prints_and_callbacks_come_before_a_later_progress_bar(run_notebook) -> None:
    """A bar's update follows what the run printed and the hither calls it made before it (as in a local cell)."""
    cells = run_notebook([
        "from mini_magic import hither\n@hither\ndef note(text):\n    print('callback:', text)",
        cell('''
            %%thither
            from tqdm.auto import tqdm
            print("printed first")
            note("called second")
            for _ in tqdm(range(3), desc="third"):
                pass
        '''),
    ])
    outputs = ok(cells[1]).outputs
    first_bar = next(i for i, o in enumerate(outputs)
                     if WIDGET_VIEW in o.get("data", {}) and "third" in o["data"].get("text/plain", ""))
    before = "".join(o["text"] for o in outputs[:first_bar] if o.get("output_type") == "stream")
    assert before == "printed first\ncallback: called second\n", outputs
