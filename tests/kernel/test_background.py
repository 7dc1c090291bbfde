"""Background runs (``%%thither --bg [--name job]``) and cancel, in real kernels.

Notebooks run through nbclient, which records the final state of every widget: a background run's panel (a VBox
displayed by the submitting cell) holds an HTML status, a VBox of mirrored progress bars and an Output widget whose
``outputs`` must hold everything the run printed or displayed, and nothing of it may reach the other cells.

nbclient keeps only the widget messages whose parent is the cell it is executing, and messages from the drainer
thread carry the parent of the most recent request: so every notebook here ends a background run while a cell
waits for it (``job.wait``), never between cells. Interrupts and the API cancel use ``live_kernel``.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import CellResult, execute_notebook

pytestmark = pytest.mark.slow

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def plain(text: str) -> str:
    return _ANSI.sub("", text)


def cell(source: str) -> str:
    return textwrap.dedent(source).strip("\n")


def ok(result: CellResult) -> str:
    """Assert the cell raised nothing; return its stdout."""
    assert result.error is None, plain("\n".join(result.error.get("traceback", []))) if result.error else None
    assert "Error" not in result.stderr, result.stderr
    return result.stdout


def json_line(result: CellResult) -> dict[str, Any]:
    """The one line a check cell printed as JSON."""
    (line,) = [ln for ln in ok(result).splitlines() if ln.startswith("{")]
    return json.loads(line)


def execute(workdir: Path, cells: list[str], timeout: int = 60) -> tuple[list[CellResult], dict[str, dict]]:
    """The cells' outputs and the final widget state (model_id -> {"model_name", "state"})."""
    return execute_notebook(workdir, cells, timeout=timeout)


@dataclass
class Panel:
    status: str  # the status line (HTML)
    outputs: list[dict[str, Any]]  # the Output widget's outputs
    bars: str  # text of everything in the bars box (tqdm descriptions, counts)

    @property
    def text(self) -> str:
        return "".join(o.get("text", "") for o in self.outputs if o.get("output_type") == "stream")

    def html(self) -> str:
        return "".join(o.get("data", {}).get("text/html", "") for o in self.outputs
                       if o.get("output_type") == "display_data")


def widget_ids(result: CellResult) -> list[str]:
    return [d[WIDGET_VIEW]["model_id"] for d in result.data() if WIDGET_VIEW in d]


def panel_of(result: CellResult, widgets: dict[str, dict]) -> Panel:
    """The run panel the cell displayed: a VBox with an HBox[status HTML, Cancel], a VBox of bars and an Output."""
    ids = widget_ids(result)
    assert len(ids) == 1, f"expected one panel in the cell's outputs, got {result.outputs!r}"
    assert ids[0] in widgets, f"panel {ids[0]} has no recorded widget state"

    def model(ref: str) -> dict[str, Any]:
        return widgets[ref.removeprefix("IPY_MODEL_")]

    def texts(ref: str) -> list[str]:
        m = model(ref)
        own = [str(m["state"]["value"])] if m["model_name"] == "HTMLModel" else []
        return own + [t for child in m["state"].get("children", []) for t in texts(child)]

    root = widgets[ids[0]]
    assert root["model_name"] == "VBoxModel", root
    rows: dict[str, list[dict[str, Any]]] = {}
    for ref in root["state"]["children"]:  # rows are found by kind, not position (hint rows may come and go)
        rows.setdefault(model(ref)["model_name"], []).append(model(ref))
    (header,), (bars,), (output,) = rows["HBoxModel"], rows["VBoxModel"], rows["OutputModel"]
    status = next(model(ref)["state"]["value"] for ref in header["state"]["children"]
                  if model(ref)["model_name"] == "HTMLModel")
    bar_text = " ".join(t for ref in bars["state"].get("children", []) for t in texts(ref))
    return Panel(status=plain(status), outputs=list(output["state"].get("outputs", [])), bars=bar_text)


def assert_clean(result: CellResult, markers: list[str]) -> None:
    """A normal cell that ran while background runs were active got none of their output or widgets."""
    everything = result.stdout + result.stderr + json.dumps(result.data())
    for marker in markers:
        assert marker not in everything, f"{marker!r} leaked into another cell: {result.outputs!r}"
    assert not widget_ids(result), f"a widget leaked into another cell: {result.outputs!r}"


# --------------------------------------------------------------------------------------------------------------------


SETUP = cell("""
    import json, time
    from mini_magic import hither

    @hither
    def report(tag, i):
        print(f'callback {tag} {i}')
""")

WAIT_RUNNING = cell("""
    t0 = time.monotonic()
    while {run}.state == 'queued' and time.monotonic() - t0 < 20:
        time.sleep(0.02)
    print(json.dumps({{'state': {run}.state, 'pid': {run}.record.worker_pid}}))
""")


def test_named_background_run_returns_at_once_and_assigns_only_on_request(workdir):
    markers = ["remote print", "callback job", "remote display", "bgbar", "anonymous output"]
    cells, widgets = execute(workdir, [
        SETUP + "\nr = 'old'",
        cell("""
            %%thither --bg --name job
            import time
            from tqdm import tqdm
            from IPython.display import display, HTML
            print('remote print start', flush=True)
            display(HTML('<b>remote display</b>'))
            for i in tqdm(range(6), desc='bgbar'):
                report('job', i)
                time.sleep(0.3)
            print('remote print end')
            r = 42
        """),
        cell("""
            from mini_magic.background import Run
            print(json.dumps({'state': job.state, 'done': job.done(), 'is_run': isinstance(job, Run)}))
        """),
        cell("""
            for k in range(4):
                print('fg tick', k, flush=True)
                time.sleep(0.25)
        """),
        cell("""
            print(json.dumps({'waited': job.wait(30), 'state': job.state, 'elapsed': job.elapsed}))
        """),
        cell("""
            res = job.result()
            print(json.dumps({'type': type(res).__name__, 'r': res.get('r'), 'r_now': r, 'i_now': 'i' in globals()}))
        """),
        cell("""
            names = job.assign()
            print(json.dumps({'names': sorted(names), 'r_now': r, 'i_now': globals().get('i')}))
        """),
        cell("""
            %%thither --bg
            import time
            time.sleep(1)
            print('anonymous output')
            anon = 7
        """),
        cell("""
            h = _
            print(json.dumps({'waited': h.wait(30), 'state': h.state, 'anon': 'anon' in globals()}))
        """),
        cell("""
            print(json.dumps([str(bar) for bar in job._panel._bars]))
        """),
    ])
    setup, submit, after, ticks, waited, result, assigned, anon_submit, anon_waited, kernel_bars = cells

    # the submitting cell shows only the panel, and returns at once: the next cell finds the run still going
    assert ok(submit) == "" and submit.stderr == ""
    assert not submit.data("execute_result"), "with --name the handle is bound, not shown"
    after_state = json_line(after)
    assert after_state["is_run"] is True
    assert after_state["state"] in ("queued", "running") and after_state["done"] is False, after_state
    assert ok(ticks).splitlines() == [f"fg tick {k}" for k in range(4)]

    state = json_line(waited)
    assert state["waited"] is True and state["state"] == "done", state
    assert isinstance(state["elapsed"], (int, float)) and state["elapsed"] > 0, state

    got = json_line(result)
    assert got["type"] == "dict" and got["r"] == 42, got
    assert got["r_now"] == "old" and got["i_now"] is False, "results were assigned before job.assign()"
    done = json_line(assigned)
    assert {"r", "i"} <= set(done["names"]) and done["r_now"] == 42 and done["i_now"] == 5, done

    # everything the run produced is in its panel ...
    panel = panel_of(submit, widgets)
    assert "done" in panel.status, panel.status
    assert "remote print start" in panel.text and "remote print end" in panel.text, panel.outputs
    assert all(f"callback job {i}" in panel.text for i in range(6)), panel.outputs
    assert "remote display" in panel.html(), panel.outputs
    # The bar widget is created by the run's drain thread; nbclient records a comm message only while the cell it
    # names as parent executes, so with ipykernel 7.1 the bar's model can be missing from the recorded state (seen
    # twice in one CI run): the kernel's own panel is then the witness that the bar was shown and finished.
    bars = panel.bars or " ".join(json.loads(ok(kernel_bars)))
    assert "bgbar" in bars and "6/6" in bars, (panel.bars, kernel_bars.outputs)
    # ... and nowhere else
    for other in (setup, after, ticks, waited, result, assigned, anon_waited):
        assert_clean(other, markers)

    # without --name the handle is the cell's value
    (value,) = anon_submit.data("execute_result")
    assert "background run" in value["text/plain"], value
    assert json_line(anon_waited) == {"waited": True, "state": "done", "anon": False}
    anon_panel = panel_of(anon_submit, widgets)
    assert "anonymous output" in anon_panel.text and "done" in anon_panel.status, anon_panel


def test_two_background_runs_at_once_each_fill_their_own_panel(workdir):
    def bg(name: str) -> str:
        return cell(f"""
            %%thither --bg --name {name}
            import time
            for i in range(5):
                print('line {name}', i, flush=True)
                report('{name}', i)
                time.sleep(0.2)
            value_{name} = '{name}'
        """)

    cells, widgets = execute(workdir, [
        SETUP,
        bg("alpha"),
        bg("beta"),
        cell("""
            print(json.dumps({'both_active': not alpha.done() and not beta.done()}))
            print(json.dumps({'alpha': [alpha.wait(30), alpha.state, alpha.result()['value_alpha']],
                              'beta': [beta.wait(30), beta.state, beta.result()['value_beta']]}))
        """),
    ])
    _, submit_a, submit_b, check = cells
    lines = [json.loads(ln) for ln in ok(check).splitlines()]
    assert lines[0] == {"both_active": True}, lines
    assert lines[1] == {"alpha": [True, "done", "alpha"], "beta": [True, "done", "beta"]}, lines
    for submit, own, other in ((submit_a, "alpha", "beta"), (submit_b, "beta", "alpha")):
        panel = panel_of(submit, widgets)
        assert "done" in panel.status, panel.status
        for i in range(5):
            assert f"line {own} {i}" in panel.text and f"callback {own} {i}" in panel.text, panel.outputs
        assert other not in panel.text, f"{other}'s output reached {own}'s panel: {panel.outputs!r}"
    assert_clean(check, ["line alpha", "line beta", "callback alpha", "callback beta"])


def test_failing_background_run(workdir):
    cells, widgets = execute(workdir, [
        SETUP,
        cell("""
            %%thither --bg --name bad
            import time
            print('about to fail', flush=True)
            time.sleep(1)
            def inner_helper():
                raise ValueError('bg boom 123')
            inner_helper()
            never = 1
        """),
        cell("""
            waited = bad.wait(30)
            try:
                bad.result()
                raised = None
            except Exception as exc:
                raised = [type(exc).__name__, str(exc), isinstance(exc, ValueError)]
            print(json.dumps({'waited': waited, 'state': bad.state, 'raised': raised, 'never': 'never' in globals()}))
        """),
    ])
    _, submit, check = cells
    got = json_line(check)
    assert got == {"waited": True, "state": "failed", "raised": ["ValueError", "bg boom 123", True],
                   "never": False}, got
    assert ok(submit) == "" and not submit.error
    panel = panel_of(submit, widgets)
    assert "failed" in panel.status, panel.status
    assert "about to fail" in panel.text
    assert "ValueError" in panel.text and "bg boom 123" in panel.text, panel.outputs
    assert "inner_helper" in panel.text, f"the panel lacks the remote traceback: {panel.outputs!r}"
    assert_clean(check, ["about to fail", "inner_helper", "remote traceback"])


def test_cancel_background_run_stops_its_worker(workdir):
    cells, widgets = execute(workdir, [
        SETUP,
        cell("""
            %%thither --bg --name job
            import time
            print('long run started', flush=True)
            time.sleep(60)
            never = 1
        """),
        WAIT_RUNNING.format(run="job"),
        cell("""
            import os
            from mini_magic import RunCancelled
            time.sleep(0.3)
            job.cancel()
            waited = job.wait(10)
            try:
                job.result()
                raised = None
            except BaseException as exc:
                raised = [type(exc).__name__, isinstance(exc, RunCancelled)]
            pid = job.record.worker_pid
            t0 = time.monotonic()
            while os.path.exists(f'/proc/{pid}') and time.monotonic() - t0 < 10:
                time.sleep(0.05)
            print(json.dumps({'waited': waited, 'state': job.state, 'raised': raised, 'never': 'never' in globals(),
                              'worker_gone': not os.path.exists(f'/proc/{pid}')}))
        """),
    ])
    _, submit, running, check = cells
    before = json_line(running)
    assert before["state"] == "running" and isinstance(before["pid"], int), before
    got = json_line(check)
    assert got == {"waited": True, "state": "cancelled", "raised": ["RunCancelled", True], "never": False,
                   "worker_gone": True}, got
    panel = panel_of(submit, widgets)
    assert "cancelled" in panel.status, panel.status
    assert "long run started" in panel.text, panel.outputs


@pytest.mark.kernel_interrupt
def test_interrupting_a_foreground_cell_leaves_background_runs_alone(live_kernel):
    kernel = live_kernel()
    assert ok(kernel.run(SETUP)) == ""
    assert ok(kernel.run(cell("""
        %%thither --bg --name job
        import time
        for i in range(15):
            print(f'count {i}', flush=True)
            time.sleep(0.2)
        counted = 15
    """))) == ""
    # the interrupt must find the run going (its worker may still be starting on a loaded machine)
    assert ok(kernel.run("for _ in range(400):\n    if job.state != 'queued': break\n    time.sleep(0.05)")) == ""
    msg_id = kernel.submit("print('fg sleeping', flush=True)\ntime.sleep(30)")
    kernel.wait_for_stdout(msg_id, "fg sleeping", timeout=20)
    time.sleep(0.5)
    kernel.interrupt()
    interrupted = kernel.collect(msg_id, timeout=20)
    assert interrupted.error is not None and interrupted.error["ename"] == "KeyboardInterrupt", interrupted.outputs
    assert "count" not in interrupted.stdout + interrupted.stderr, interrupted.outputs

    state_after_interrupt = json_line(kernel.run("print(json.dumps({'state': job.state}))"))
    assert state_after_interrupt == {"state": "running"}, "the background run should still be going"
    got = json_line(kernel.run(cell("""
        waited = job.wait(30)
        panel_text = ''.join(o.get('text', '') for o in job._panel.output.outputs)
        print(json.dumps({'waited': waited, 'state': job.state, 'counted': job.result().get('counted'),
                          'lines': [ln for ln in panel_text.splitlines() if ln.startswith('count')]}))
    """)))
    assert got["waited"] is True and got["state"] == "done" and got["counted"] == 15, got
    assert got["lines"] == [f"count {i}" for i in range(15)], got["lines"]


CANCELLER = cell("""
    import threading, time
    import mini_magic.session as session
    cancel_log = []

    def _cancel_first_active_run():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if session._ACTIVE:
                run_id = next(iter(session._ACTIVE))
                cancel_log.append([run_id, session.request_cancel(run_id)])
                return
            time.sleep(0.01)

    threading.Thread(target=_cancel_first_active_run, daemon=True).start()
""")


def test_request_cancel_from_another_kernel_thread_stops_a_foreground_cell(live_kernel):
    kernel = live_kernel()
    assert ok(kernel.run(CANCELLER)) == ""
    result = kernel.run(cell("""
        %%thither
        import time
        print('fg run started', flush=True)
        time.sleep(30)
        fg_value = 1
    """), timeout=20)
    assert result.error is not None, result.outputs
    assert result.error["ename"] == "RunCancelled", result.error
    check = json_line(kernel.run("import json\nprint(json.dumps({'log': cancel_log, "
                                 "'assigned': 'fg_value' in globals()}))"))
    assert check["assigned"] is False, check
    assert len(check["log"]) == 1 and check["log"][0][1] is True, check


def test_name_without_bg_is_a_usage_error(workdir):
    cells, _ = execute(workdir, [
        "%%thither --name job\nnot_assigned = 1",
        "import json\nprint(json.dumps({'job': 'job' in globals(), 'x': 'not_assigned' in globals()}))",
    ])
    usage, check = cells
    if usage.error is not None:
        ename, message = usage.error["ename"], plain(usage.error["evalue"])
    else:
        match = re.search(r"UsageError: (.*)", usage.stderr, re.S)
        assert match, f"expected a usage error, got {usage.outputs!r}"
        ename, message = "UsageError", match.group(1)
    assert "UsageError" in ename, (ename, message)
    assert "--bg" in message and "--name" in message, message
    assert json_line(check) == {"job": False, "x": False}
