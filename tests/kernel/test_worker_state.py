"""A result must not depend on which warm worker a run lands on (real kernels, real workers).

Each case: cell B runs on a fresh worker (the baseline), cell A changes some interpreter state on that same warm
worker, then cell B runs again on the same profile and must print exactly what it printed on the fresh worker. A
change the worker can undo must not cost the worker (same pid); one it cannot undo (a lowered hard rlimit) must
send the next run to a new worker.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

PID = "import os\nprint('PID', os.getpid(), flush=True)\n"
# A profile of their own: no prewarmed default worker can arrive between two cells and take the next run.
HEADER = "%%thither --env MM_STATE_TEST=1"

# (cell A: changes state, cell B: shows the state a run sees)
CASES = {
    "recursion-limit": (
        "import sys\nsys.setrecursionlimit(80)",
        "import sys\nprint(sys.getrecursionlimit())",
    ),
    "warnings-filter": (
        "import warnings\nwarnings.simplefilter('error')\nwarnings.showwarning = lambda *a, **k: None",
        "import warnings\nwarnings.warn('careful')\nprint('survived the warning')",
    ),
    "builtins": (
        "import builtins\nbuiltins.print = lambda *a, **k: None\nbuiltins.leaked_name = 1\nbuiltins.sorted = reversed",
        "import builtins\nprint(hasattr(builtins, 'leaked_name'), sorted([2, 1]))",
    ),
    "soft-rlimit": (
        ("import resource\nsoft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
         "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))"),
        "import resource\nprint(resource.getrlimit(resource.RLIMIT_NOFILE))",
    ),
    "pyplot-figure": (
        # The cell fails, so the inline backend never shows (and closes) its figure.
        ("import matplotlib, matplotlib.pyplot as plt\nmatplotlib.rcParams['lines.linewidth'] = 7\nplt.ioff()\n"
         "plt.figure()\nplt.plot([1, 2])\nraise RuntimeError('the figure is never shown')"),
        # A figure first: pyplot loads its backend (and the inline backend turns interactive mode on, as in a
        # kernel) only when the first figure is made, so a fresh worker would otherwise report False here.
        ("import matplotlib, matplotlib.pyplot as plt\nplt.close(plt.figure())\nprint(plt.get_fignums(), "
         "plt.isinteractive(), matplotlib.rcParams['lines.linewidth'])"),
    ),
    "signal-handler": (
        ("import signal\nsignal.signal(signal.SIGUSR1, lambda *a: None)\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})\nsignal.setitimer(signal.ITIMER_REAL, 300)"),
        ("import signal\nprint(signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM), "
         "signal.pthread_sigmask(signal.SIG_BLOCK, []), signal.getitimer(signal.ITIMER_REAL))"),
    ),
    "logging": (
        "import logging\nlogging.disable(logging.CRITICAL)\nlogging.basicConfig(level=logging.DEBUG)",
        "import logging\nprint(logging.root.manager.disable, logging.root.level, len(logging.root.handlers))",
    ),
    "sys-hooks-umask": (
        ("import sys, os\nsys.excepthook = None\nsys.setswitchinterval(0.5)\nsys.settrace(lambda *a: None)\n"
         "os.umask(0o777)\nimport gc\ngc.disable()"),
        ("import sys, os, gc\nprint(sys.excepthook, sys.getswitchinterval(), sys.gettrace(), gc.isenabled())\n"
         "old = os.umask(0o22)\nos.umask(old)\nprint(oct(old))"),
    ),
}


def pid_and_rest(stdout: str) -> tuple[int, str]:
    match = re.match(r"PID (\d+)\n", stdout)
    assert match, f"no PID line in {stdout!r}"
    return int(match.group(1)), stdout[match.end():]


def run_thither(kernel, body: str, *, may_fail: bool = False) -> tuple[int, str]:
    result = kernel.run(f"{HEADER}\n{PID}{body}")
    assert may_fail or result.error is None, result.error
    return pid_and_rest(result.stdout)


@pytest.mark.parametrize("case", CASES)
def test_a_warm_worker_runs_the_next_cell_as_a_fresh_one_would(live_kernel, case: str) -> None:
    change, observe = CASES[case]
    kernel = live_kernel()
    fresh_pid, fresh = run_thither(kernel, observe)
    changed_pid, _ = run_thither(kernel, change, may_fail=True)
    assert changed_pid == fresh_pid, "cell A should run on the warm worker of cell B"
    again_pid, again = run_thither(kernel, observe)
    assert again == fresh, f"{case}: what cell A changed reached the next run"
    assert again_pid == fresh_pid, f"{case}: the worker was recycled although the change can be undone"


UNDOABLE = {
    "hard-rlimit": (
        "import resource\nprint(resource.getrlimit(resource.RLIMIT_NOFILE))",
        ("import resource\nsoft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
         "resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, soft - 1))"),
    ),
    "matplotlib-backend": (
        "import matplotlib\nprint(matplotlib.get_backend())",
        "import matplotlib\nmatplotlib.use('agg')",
    ),
    "matplotlib-backend-on-import": (
        "print('nothing imported')",
        "import matplotlib\nmatplotlib.use('agg')",
    ),
}


@pytest.mark.parametrize("case", UNDOABLE)
def test_a_change_that_cannot_be_undone_sends_the_next_run_to_a_new_worker(live_kernel, case: str) -> None:
    observe, change = UNDOABLE[case]
    kernel = live_kernel()
    fresh_pid, fresh = run_thither(kernel, observe)
    changed_pid, _ = run_thither(kernel, change)
    assert changed_pid == fresh_pid
    again_pid, again = run_thither(kernel, observe)
    assert again_pid != fresh_pid, f"{case}: a worker that cannot be put back ran another cell"
    assert again == fresh


def test_the_worker_packs_results_in_its_own_state_not_the_cells(live_kernel) -> None:
    kernel = live_kernel()
    pid, _ = run_thither(kernel, "import builtins, sys\nbuiltins.isinstance = None\nsys.setrecursionlimit(45)\n"
                         "sys.stdout = None\nx = {'nested': [[1, 2], {'a': (3,)}]}")
    assert kernel.run("print(x)").stdout == "{'nested': [[1, 2], {'a': (3,)}]}\n"
    assert run_thither(kernel, "")[0] == pid


def vm_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.parametrize("ends", ["returns", "raises"])
def test_an_idle_warm_worker_does_not_keep_the_inputs_of_its_last_run(live_kernel, ends: str) -> None:
    kernel = live_kernel()
    pid, _ = run_thither(kernel, "")
    before = vm_rss_mib(pid)
    assert kernel.run("big = bytearray(384 * 2**20)\nbig[::4096] = b'x' * len(big[::4096])").error is None
    # The cell's function keeps the namespace in a reference cycle (f.__globals__), the error's frames too.
    tail = "raise ValueError(len(data))" if ends == "raises" else "n = len(data)"
    result = kernel.run(f"{HEADER}\n{PID}data = big\ndef f():\n    return data\nf()\n{tail}")
    assert pid_and_rest(result.stdout)[0] == pid
    assert (result.error is not None) == (ends == "raises")
    deadline = time.monotonic() + 10
    while vm_rss_mib(pid) > before + 128 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert vm_rss_mib(pid) < before + 128, (
        f"idle worker {pid} holds {vm_rss_mib(pid) - before:.0f} MiB more than before the 384 MiB run")


def test_rc_params_set_by_the_run_that_imported_matplotlib_are_reset(live_kernel) -> None:
    """No snapshot can hold rcParams before the import: the baseline is what matplotlib read at import."""
    kernel = live_kernel()
    observe = "import matplotlib\nprint(matplotlib.rcParams['lines.linewidth'], matplotlib.rcParams['axes.grid'])"
    fresh = kernel.run(f"%%thither --env MM_STATE_TEST=fresh\n{observe}")
    assert fresh.error is None, fresh.error
    pid, _ = run_thither(kernel, "import matplotlib.pyplot as plt\nplt.style.use('ggplot')\n"
                         "plt.rcParams['lines.linewidth'] = 7")
    again_pid, again = run_thither(kernel, observe)
    assert (again_pid, again) == (pid, fresh.stdout)


def test_importing_matplotlib_under_a_chosen_backend_keeps_the_worker(live_kernel) -> None:
    """The backend check must not take the backend a fresh import picks (MPLBACKEND, any case) for a switch."""
    kernel = live_kernel()
    header = "%%thither --env MPLBACKEND=Agg"
    first = kernel.run(f"{header}\n{PID}import matplotlib.pyplot as plt\nplt.plot([1])")
    second = kernel.run(f"{header}\n{PID}")
    assert first.error is None and second.error is None
    assert pid_and_rest(first.stdout)[0] == pid_and_rest(second.stdout)[0]
