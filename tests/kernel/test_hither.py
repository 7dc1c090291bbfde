"""``@hither`` local callbacks and tqdm mirroring, under a real kernel.

Two notebooks are executed once each (module-scoped fixtures) and several tests check their outputs, the kernel's
local state after the runs (printed as JSON by a final normal cell) and the widget state that nbclient stores in the
executed notebook's metadata. The interrupt case drives a live kernel.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import CellResult
from .conftest import execute_notebook as base_execute

pytestmark = pytest.mark.slow

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PROGRESS_MODELS = ("FloatProgressModel", "IntProgressModel")
TQDM_TERMINAL_TEXT = ("|█", "it/s]", "100%|")


# -- helpers ---------------------------------------------------------------------------------------------------


def execute_notebook(workdir: Path, cells: list[tuple[str, str]], *, timeout: int = 120
                     ) -> tuple[dict[str, CellResult], dict[str, Any]]:
    """Run ``%load_ext mini_magic`` then the named cells, as the ``run_notebook`` fixture does.

    Returns {name: CellResult} and the final widget state (model_id -> {"model_name", "state", ["buffers"]}).
    """
    (workdir / "home").mkdir(exist_ok=True)
    results, widgets = base_execute(workdir, [source for _, source in cells], timeout=timeout)
    return dict(zip((name for name, _ in cells), results)), widgets


def ok(cell: CellResult) -> CellResult:
    """The cell, after checking it raised nothing."""
    assert cell.error is None, (cell.error, cell.stderr)
    return cell


def local_state(cell: CellResult) -> dict[str, Any]:
    """The JSON a normal cell printed on a line starting with 'STATE '."""
    ok(cell)
    lines = [line for line in cell.stdout.splitlines() if line.startswith("STATE ")]
    assert len(lines) == 1, cell.stdout
    return json.loads(lines[0][len("STATE "):])


def widget_ids(cell: CellResult) -> list[str]:
    return [d[WIDGET_VIEW]["model_id"] for d in cell.data() if WIDGET_VIEW in d]


def ref(value: str) -> str:
    return value.removeprefix("IPY_MODEL_")


def descendants(widgets: dict[str, Any], model_id: str) -> list[dict[str, Any]]:
    """The model and every model below it through ``children``."""
    found, stack = [], [model_id]
    while stack:
        model = widgets.get(stack.pop())
        if model is None:
            continue
        found.append(model)
        stack.extend(ref(child) for child in model["state"].get("children", []))
    return found


def tqdm_bars(widgets: dict[str, Any]) -> list[dict[str, Any]]:
    """tqdm.notebook bars: an HBox of [HTML (description), progress, HTML (counts)].

    Each as {"box": HBox model id, "desc": left text, "value", "max", "bar_style"}.
    """
    bars = []
    for box_id, model in widgets.items():
        if model["model_name"] != "HBoxModel":
            continue
        children = [widgets.get(ref(c)) for c in model["state"].get("children", [])]
        if len(children) != 3 or None in children or children[1]["model_name"] not in PROGRESS_MODELS:
            continue
        progress = children[1]["state"]
        bars.append({"box": box_id, "desc": children[0]["state"].get("value", ""), "value": progress.get("value"),
                     "max": progress.get("max"), "bar_style": progress.get("bar_style", "")})
    return bars


def bars_named(widgets: dict[str, Any], desc: str) -> list[dict[str, Any]]:
    return [b for b in tqdm_bars(widgets) if b["desc"].startswith(f"{desc}:")]


# -- notebook 1: callbacks -------------------------------------------------------------------------------------

CALLBACK_SETUP = """\
import asyncio, contextlib, json, threading
from IPython.display import display, HTML
from mini_magic import hither
from mini_magic.callbacks import HitherHandle

got = []
@hither
def track(x):
    got.append(x)

@hither
def shout(msg):
    print('CALLBACK-PRINT', msg)
    display(HTML('<b>callback-display</b>'))

boom_calls = []
@hither
def boom(i):
    boom_calls.append(i)
    raise ValueError(f'boom number {i}')

async_got = []
@hither
async def atrack(x):
    await asyncio.sleep(0)
    async_got.append([x, threading.current_thread().name])

factory_made = []
@hither
def live_plot_factory(name):
    points = []
    factory_made.append(points)
    def update(x):
        points.append(x)
    return update

cm_log = []
@hither
@contextlib.contextmanager
def session(tag):
    print('CM-ENTER', tag, flush=True)
    cm_log.append(['enter', tag])
    try:
        yield lambda v: cm_log.append(['call', tag, v])
    finally:
        cm_log.append(['exit', tag])

acm_log = []
@hither
@contextlib.asynccontextmanager
async def asession(tag):
    await asyncio.sleep(0)
    acm_log.append(['enter', tag])
    async def step(v):
        await asyncio.sleep(0)
        acm_log.append(['call', tag, v])
    try:
        yield step
    finally:
        await asyncio.sleep(0)
        acm_log.append(['exit', tag])
"""

CALLBACK_CELLS = [
    ("setup", CALLBACK_SETUP),
    ("bulk", "%%thither\n"
             "print('STUB-RETURNS-NONE', track(-1) is None, flush=True)\n"
             "for i in range(100000):\n"
             "    track(i)\n"
             "shout('hello')\n"
             "t2 = track\n"
             "print('REMOTE-DONE')"),
    ("bulk_state", "print('STATE', json.dumps({'first': got[:1], 'n': len(got),"
                   " 'in_order': got[1:] == list(range(100000)), 't2_is_track': t2 is track}))\n"
                   "got.clear()"),
    ("dict_local", "cbs = {'t': track}"),
    ("dict_and_lock", "%%thither\n"
                      "import threading\n"
                      "print('DICT-STUB-NONE', cbs['t']('via-dict') is None)\n"
                      "track('before-lock')\n"
                      "track(threading.Lock())\n"
                      "track('after-lock')\n"
                      "print('LOCK-CELL-DONE')"),
    ("boom", "%%thither\n"
             "for i in range(50):\n"
             "    boom(i)\n"
             "print('AFTER-BOOM')\n"
             "after_boom = 'assigned'"),
    ("async", "%%thither\n"
              "for i in range(5):\n"
              "    atrack(i)"),
    ("factory_local", "plot = live_plot_factory('loss')\n"
                      "print('HANDLE', isinstance(plot, HitherHandle), len(factory_made))"),
    ("factory_run1", "%%thither\nfor i in range(3):\n    plot(i)"),
    ("factory_run2", "%%thither\nfor i in range(10, 13):\n    plot(i)"),
    ("cm_local", "sess = session('S')\nasess = asession('A')\n"
                 "print('HANDLES', isinstance(sess, HitherHandle), isinstance(asess, HitherHandle))"),
    ("cm_run1", "%%thither\n"
                "print('REMOTE-START', flush=True)\n"
                "print('HANDLE-STUB-NONE', sess(0) is None, asess(0) is None)\n"
                "for v in (1, 2):\n"
                "    sess(v)\n"
                "    asess(v)"),
    ("cm_run2", "%%thither\nsess(3)\nasess(3)"),
    ("cm_raise", "%%thither\n"
                 "sess('x')\n"
                 "asess('x')\n"
                 "raise RuntimeError('cell failed on purpose')"),
    ("state", "print('STATE', json.dumps({'got': got, 'boom_calls': len(boom_calls), 'after_boom': after_boom,"
              " 'async_got': async_got, 'factory_made': factory_made, 'cm_log': cm_log, 'acm_log': acm_log}))"),
]


@pytest.fixture(scope="module")
def callbacks_nb(tmp_path_factory):
    return execute_notebook(tmp_path_factory.mktemp("hither_callbacks"), CALLBACK_CELLS)


@pytest.fixture(scope="module")
def callbacks_state(callbacks_nb):
    cells, _ = callbacks_nb
    return local_state(cells["state"])


def test_stub_returns_none_calls_arrive_in_order_and_hither_comes_back_as_itself(callbacks_nb):
    cells, _ = callbacks_nb
    ok(cells["setup"])
    bulk = ok(cells["bulk"])
    assert "STUB-RETURNS-NONE True" in bulk.stdout, bulk.stdout
    assert "REMOTE-DONE" in bulk.stdout
    state = local_state(cells["bulk_state"])
    assert state["first"] == [-1]
    assert state["n"] == 100001, f"{100001 - state['n']} calls were lost"
    assert state["in_order"], "the 100,000 calls did not arrive in order"
    assert state["t2_is_track"], "t2 = track in a thither cell did not come back as the local hither object"


def test_callback_prints_and_displays_into_the_running_cell(callbacks_nb):
    cells, _ = callbacks_nb
    bulk = ok(cells["bulk"])
    assert "CALLBACK-PRINT hello" in bulk.stdout, bulk.outputs
    html = [d.get("text/html", "") for d in bulk.data()]
    assert any("<b>callback-display</b>" in h for h in html), bulk.outputs


def test_hither_inside_a_captured_dict_and_unpicklable_arguments(callbacks_nb, callbacks_state):
    cells, _ = callbacks_nb
    ok(cells["dict_local"])
    cell = ok(cells["dict_and_lock"])
    assert "DICT-STUB-NONE True" in cell.stdout, cell.stdout
    assert "LOCK-CELL-DONE" in cell.stdout
    # the call with the lock is dropped and named on stderr; the others arrive, in order
    assert callbacks_state["got"] == ["via-dict", "before-lock", "after-lock"]
    assert "lock" in cell.stderr.lower(), cell.stderr
    assert "dropped" in cell.stderr.lower() or "cannot" in cell.stderr.lower(), cell.stderr


def test_callback_that_raises_is_reported_once_and_the_run_continues(callbacks_nb, callbacks_state):
    cells, _ = callbacks_nb
    cell = cells["boom"]
    assert cell.error is None, cell.error
    assert "AFTER-BOOM" in cell.stdout
    assert callbacks_state["after_boom"] == "assigned"
    assert callbacks_state["boom_calls"] == 50
    stderr = cell.stderr
    assert stderr.count("Traceback (most recent call last)") == 1, stderr
    assert "boom number 0" in stderr and "raise ValueError" in stderr, stderr
    assert set(re.findall(r"boom number (\d+)", stderr)) == {"0"}, stderr
    # the summary comes at the end and gives the count
    assert "50 time" in stderr.rstrip().splitlines()[-1], stderr
    assert stderr.index("50 time") > stderr.index("Traceback (most recent call last)")


def test_async_callback_runs_on_a_dedicated_loop_thread(callbacks_nb, callbacks_state):
    cells, _ = callbacks_nb
    ok(cells["async"])
    got = callbacks_state["async_got"]
    assert [x for x, _ in got] == [0, 1, 2, 3, 4]
    threads = {name for _, name in got}
    assert len(threads) == 1 and "MainThread" not in threads, threads


def test_factory_returns_a_handle_whose_state_persists_across_runs(callbacks_nb, callbacks_state):
    cells, _ = callbacks_nb
    assert "HANDLE True 1" in ok(cells["factory_local"]).stdout
    ok(cells["factory_run1"])
    ok(cells["factory_run2"])
    assert callbacks_state["factory_made"] == [[0, 1, 2, 10, 11, 12]]


def test_context_manager_hithers_enter_and_exit_once_per_run(callbacks_nb, callbacks_state):
    cells, _ = callbacks_nb
    assert "HANDLES True True" in ok(cells["cm_local"]).stdout
    run1 = ok(cells["cm_run1"])
    assert "HANDLE-STUB-NONE True True" in run1.stdout, run1.stdout
    # entered before the run starts
    assert "CM-ENTER S" in run1.stdout and "REMOTE-START" in run1.stdout, run1.stdout
    assert run1.stdout.index("CM-ENTER S") < run1.stdout.index("REMOTE-START"), run1.stdout
    ok(cells["cm_run2"])
    failed = cells["cm_raise"]
    assert failed.error is not None and "cell failed on purpose" in failed.error["evalue"], failed.outputs

    def expected(tag: str) -> list[list[Any]]:
        runs = [[0, 1, 2], [3], ["x"]]
        return [item for values in runs
                for item in (["enter", tag], *(["call", tag, v] for v in values), ["exit", tag])]

    assert callbacks_state["cm_log"] == expected("S")
    assert callbacks_state["acm_log"] == expected("A")


# -- notebook 2: tqdm mirroring, ready-made helpers, the run panel ----------------------------------------------

TQDM_CELLS = [
    ("notebook_tqdm", "from tqdm.notebook import tqdm"),
    ("captured", "%%thither\nfor _ in tqdm(range(11), desc='captured'):\n    pass"),
    ("imported", "%%thither\n"
                 "from tqdm import tqdm, trange\n"
                 "from tqdm.auto import tqdm as atqdm\n"
                 "for _ in tqdm(range(7), desc='std'):\n    pass\n"
                 "for _ in trange(8, desc='trange'):\n    pass\n"
                 "for _ in atqdm(range(9), desc='auto'):\n    pass"),
    ("nested", "%%thither\n"
               "from tqdm import tqdm\n"
               "for i in tqdm(range(3), desc='outer'):\n"
               "    for j in tqdm(range(4), desc='inner', leave=False):\n"
               "        pass"),
    ("failing", "%%thither\n"
                "from tqdm import tqdm\n"
                "for i in tqdm(range(20), desc='failing'):\n"
                "    if i == 5:\n"
                "        raise ValueError('stop the loop')"),
    ("helpers_local", "from mini_magic import live_plot, progress\n"
                      "plot = live_plot('loss')\n"
                      "bar = progress(100)"),
    ("helpers_run", "%%thither\n"
                    "for i in range(100):\n"
                    "    plot(i, loss=1 / (i + 1))\n"
                    "    bar()"),
    ("slow", "%%thither\nimport time\ntime.sleep(1.5)\nslow_done = True"),
    ("fast", "%%thither\nfast = 1 + 1"),
]


@pytest.fixture(scope="module")
def tqdm_nb(tmp_path_factory):
    return execute_notebook(tmp_path_factory.mktemp("hither_tqdm"), TQDM_CELLS)


def assert_complete_bar_in_cell(widgets: dict[str, Any], cell: CellResult, desc: str, n: int) -> None:
    bars = bars_named(widgets, desc)
    assert len(bars) == 1, (desc, tqdm_bars(widgets))
    (bar,) = bars
    assert bar["value"] == bar["max"] == n, bar
    assert bar["bar_style"] == "success", bar
    assert bar["box"] in widget_ids(cell), f"the {desc!r} bar is not displayed in its own cell"


def test_tqdm_in_a_thither_cell_is_mirrored_as_notebook_bars(tqdm_nb):
    cells, widgets = tqdm_nb
    ok(cells["notebook_tqdm"])
    assert_complete_bar_in_cell(widgets, ok(cells["captured"]), "captured", 11)
    imported = ok(cells["imported"])
    assert_complete_bar_in_cell(widgets, imported, "std", 7)
    assert_complete_bar_in_cell(widgets, imported, "trange", 8)
    assert_complete_bar_in_cell(widgets, imported, "auto", 9)


def test_nested_tqdm_bars(tqdm_nb):
    cells, widgets = tqdm_nb
    assert_complete_bar_in_cell(widgets, ok(cells["nested"]), "outer", 3)
    inner = bars_named(widgets, "inner")
    assert inner, tqdm_bars(widgets)
    for bar in inner:
        assert bar["value"] == bar["max"] == 4, inner
        assert bar["bar_style"] != "danger", inner


def test_unfinished_bar_of_a_failing_cell_turns_red(tqdm_nb):
    cells, widgets = tqdm_nb
    failing = cells["failing"]
    assert failing.error is not None and "stop the loop" in failing.error["evalue"], failing.outputs
    (bar,) = bars_named(widgets, "failing")
    assert bar["max"] == 20 and bar["value"] < 20, bar
    assert bar["bar_style"] == "danger", bar


def test_worker_stderr_has_no_terminal_tqdm_rendering(tqdm_nb):
    cells, _ = tqdm_nb
    for name in ("captured", "imported", "nested", "failing"):
        stderr = cells[name].stderr
        for text in TQDM_TERMINAL_TEXT:
            assert text not in stderr, (name, stderr)


def test_live_plot_and_progress_helpers(tqdm_nb):
    cells, widgets = tqdm_nb
    ok(cells["helpers_local"])
    ok(cells["helpers_run"])
    images = [m for m in widgets.values() if m["model_name"] == "ImageModel"]
    assert images, "live_plot displayed no Image widget"
    pngs = []
    for image in images:
        value = image["state"].get("value")
        for buffer in image.get("buffers", []):
            if buffer.get("path") == ["value"]:
                value = base64.b64decode(buffer["data"])
        if isinstance(value, bytes) and value.startswith(b"\x89PNG"):
            pngs.append(value)
    assert pngs, f"no Image widget holds a PNG: {images}"
    hundred = [b for b in tqdm_bars(widgets) if b["max"] == 100]
    assert len(hundred) == 1, tqdm_bars(widgets)
    assert hundred[0]["value"] == 100, hundred


def test_run_panel_for_a_slow_cell_only(tqdm_nb):
    cells, widgets = tqdm_nb
    slow = ok(cells["slow"])
    panels = [m for m in widget_ids(slow) if widgets.get(m, {}).get("model_name") == "VBoxModel"]
    assert panels, f"no panel displayed for a 1.5 s run: {slow.outputs}"
    texts = [m["state"].get("value", "") for m in descendants(widgets, panels[0]) if m["model_name"] == "HTMLModel"]
    assert any("done" in t and "local" in t for t in texts), texts
    fast = ok(cells["fast"])
    assert widget_ids(fast) == [], f"a trivial cell displayed widgets: {fast.outputs}"


# -- interrupt: context managers still exit once ---------------------------------------------------------------


@pytest.mark.kernel_interrupt
def test_context_managers_exit_once_when_the_kernel_is_interrupted(live_kernel):
    kernel = live_kernel()
    setup = kernel.run(CALLBACK_SETUP + "\nsess = session('S')\nasess = asession('A')")
    assert setup.error is None, setup.error
    msg_id = kernel.submit("%%thither\n"
                           "import time\n"
                           "sess('go')\n"
                           "asess('go')\n"
                           "print('started', flush=True)\n"
                           "while True:\n"
                           "    time.sleep(0.05)")
    kernel.wait_for_stdout(msg_id, "started", timeout=30)
    kernel.interrupt()
    result = kernel.collect(msg_id, timeout=30)
    assert result.error is not None and result.error["ename"] == "KeyboardInterrupt", result.outputs
    state = local_state(kernel.run("print('STATE', json.dumps({'cm_log': cm_log, 'acm_log': acm_log}))"))
    assert state["cm_log"] == [["enter", "S"], ["call", "S", "go"], ["exit", "S"]]
    assert state["acm_log"] == [["enter", "A"], ["call", "A", "go"], ["exit", "A"]]
