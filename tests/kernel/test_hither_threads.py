"""Hither calls and tqdm bars made from threads the cell starts reach the notebook, under a real kernel.

The worker's current run (mini_magic/worker/context.py) is process-wide on purpose: a ``threading.Thread`` and a
``concurrent.futures`` executor start with an empty ``contextvars`` context, so a run kept in a ContextVar would be
invisible to them and their calls would be lost.
"""

from __future__ import annotations

import pytest

from .test_hither import assert_complete_bar_in_cell, execute_notebook, local_state, ok

pytestmark = pytest.mark.slow

CELLS = [
    ("setup", "import json\n"
              "from mini_magic import hither\n"
              "got = []\n"
              "@hither\n"
              "def track(source, i):\n"
              "    got.append([source, i])"),
    ("threads", "%%thither\n"
                "import concurrent.futures, threading\n"
                "from tqdm import tqdm\n"
                "def in_thread():\n"
                "    for i in tqdm(range(6), desc='thread-bar'):\n"
                "        track('thread', i)\n"
                "t = threading.Thread(target=in_thread)\n"
                "t.start(); t.join()\n"
                "def in_pool(i):\n"
                "    track('pool', i)\n"
                "    return i\n"
                "with concurrent.futures.ThreadPoolExecutor(4) as pool:\n"
                "    list(pool.map(in_pool, range(50)))\n"
                "    pool.submit(lambda: [None for _ in tqdm(range(5), desc='pool-bar')]).result()\n"
                "del t, pool"),
    ("state", "print('STATE', json.dumps({'thread': [i for s, i in got if s == 'thread'],"
              " 'pool': sorted(i for s, i in got if s == 'pool')}))"),
]


@pytest.fixture(scope="module")
def threads_nb(tmp_path_factory):
    return execute_notebook(tmp_path_factory.mktemp("hither_threads"), CELLS)


def test_hither_calls_from_a_thread_and_an_executor_arrive(threads_nb):
    cells, _ = threads_nb
    ok(cells["threads"])
    assert "dropped" not in cells["threads"].stderr, cells["threads"].stderr
    state = local_state(cells["state"])
    assert state["thread"] == list(range(6))
    assert state["pool"] == list(range(50))


def test_tqdm_bars_from_a_thread_and_an_executor_are_mirrored_in_the_cell(threads_nb):
    cells, widgets = threads_nb
    assert_complete_bar_in_cell(widgets, ok(cells["threads"]), "thread-bar", 6)
    assert_complete_bar_in_cell(widgets, cells["threads"], "pool-bar", 5)
