"""Large values travel between a real kernel and its worker in shared memory, and nothing shared outlives a run,
however it ends: interrupted, crashed, or its kernel killed.

What "shared" means here is checked from outside, through /proc: which mappings and descriptors of anonymous memory
files named ``mini_magic`` (mini_magic/shared_frames.py) a process holds, and the machine's ``Shmem`` total (a
memory file in flight, held by no process, still counts there). Named segments (/dev/shm) must not appear at all.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.polling import wait_until

from .test_processes import kernel_pid, pids_in, running, workers_of

pytest.importorskip("numpy")
pytestmark = [pytest.mark.process_lifecycle,
              pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="inspects /proc")]

MIB = 1 << 20
SIZE_MIB = 256
MAKE_X = f"import numpy as np\nx = np.arange({SIZE_MIB * MIB // 8}, dtype=np.float64)"
# Prints where the worker's copy of x lives: the mapping that holds its first byte.
WHERE_X = (
    "import os\n"
    "print('PID', os.getpid(), flush=True)\n"
    "def mapping(a):\n"
    "    address = a.__array_interface__['data'][0]\n"
    "    for line in open('/proc/self/maps'):\n"
    "        start, end = (int(v, 16) for v in line.split()[0].split('-'))\n"
    "        if start <= address < end:\n"
    "            return ' '.join(line.split()[5:]) or 'anonymous'\n"
    "print('X IN', mapping(x), flush=True)\n"
)


def shared_holdings(pid: int) -> list[str]:
    """The memory files named mini_magic that ``pid`` maps or holds a descriptor of (gone: nothing)."""
    held = []
    try:
        held += [line for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if "memfd:mini_magic" in line]
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if "memfd:mini_magic" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    held.append(f"fd {fd}")
            except OSError:
                pass
    except OSError:
        pass
    return held


def shmem_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no Shmem in /proc/meminfo")


def dev_shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


class Baseline:
    """The machine's shared memory before a run, for :meth:`nothing_left` after it ends."""

    def __init__(self) -> None:
        self.shmem_mib, self.dev_shm = shmem_mib(), dev_shm()

    def nothing_left(self, pids: list[int], timeout: float = 10) -> None:
        assert wait_until(lambda: not any(shared_holdings(p) for p in pids), timeout), {
            p: shared_holdings(p) for p in pids}
        # The 256 MiB that went in (and any result) are freed: what is left is noise from elsewhere on the machine.
        assert wait_until(lambda: shmem_mib() < self.shmem_mib + SIZE_MIB / 2, timeout), (self.shmem_mib, shmem_mib())
        assert dev_shm() == self.dev_shm


def kernel_with_x(live_kernel) -> tuple[object, int, Baseline]:
    """A kernel holding the 256 MiB array ``x``, its pid, and the machine's shared memory before any run."""
    kernel = live_kernel()
    assert kernel.run(MAKE_X).error is None
    return kernel, kernel_pid(kernel), Baseline()


def test_a_large_array_goes_in_and_comes_back_through_shared_memory(live_kernel):
    kernel = live_kernel()
    assert kernel.run(MAKE_X).error is None
    result = kernel.run("%%thither\n" + WHERE_X + "y = x + 1")
    assert result.error is None, result.error
    assert "X IN /memfd:mini_magic" in result.stdout, result.stdout
    kpid = kernel_pid(kernel)
    back = kernel.run("print(y[5], y.flags.writeable)\ny[0] = -1\nprint(y[0])")
    assert back.stdout == "6.0 True\n-1.0\n", back.stdout
    assert len(shared_holdings(kpid)) >= 1, "y did not arrive as a mapping of shared memory"
    shmem_before = shmem_mib()
    assert kernel.run("del y").error is None
    assert wait_until(lambda: not shared_holdings(kpid), 10), shared_holdings(kpid)
    assert shmem_mib() < shmem_before - SIZE_MIB / 2, "y's pages were not freed with y"


def test_turned_off_large_values_go_through_the_socket(live_kernel):
    kernel = live_kernel(env={"MINI_MAGIC_SHARED_MEMORY": "0"})
    assert kernel.run(MAKE_X).error is None
    result = kernel.run("%%thither\n" + WHERE_X + "y = x + 1")
    assert result.error is None, result.error
    assert "X IN" in result.stdout and "memfd" not in result.stdout, result.stdout
    assert not shared_holdings(kernel_pid(kernel))


@pytest.mark.kernel_interrupt
def test_an_interrupted_run_leaves_nothing_shared(live_kernel):
    kernel, kpid, baseline = kernel_with_x(live_kernel)
    msg_id = kernel.submit("%%thither\n" + WHERE_X + "y = x + 1\nprint('started', flush=True)\n"
                           "import time\nwhile True:\n    time.sleep(0.05)")
    seen = kernel.wait_for_stdout(msg_id, "started", timeout=60)
    (worker,) = pids_in(seen.stdout)
    assert shared_holdings(worker), "the worker's x is not in shared memory"
    kernel.interrupt()
    result = kernel.collect(msg_id, timeout=30)
    assert result.error is not None and result.error["ename"] == "KeyboardInterrupt"
    baseline.nothing_left([kpid, worker, *workers_of(kpid)])


def test_a_crash_leaves_nothing_shared(live_kernel):
    """The worker dies (SIGKILL) holding its input and a result made from it in shared and private memory."""
    kernel, kpid, baseline = kernel_with_x(live_kernel)
    result = kernel.run("%%thither\n" + WHERE_X + "import os, signal\ny = x + 1\nos.kill(os.getpid(), signal.SIGKILL)",
                        timeout=60)
    assert result.error is not None and result.error["ename"] == "WorkerCrashed", result.error
    (worker,) = pids_in(result.stdout)
    assert kernel.run("print('y' in globals())").stdout == "False\n"
    baseline.nothing_left([kpid, worker, *workers_of(kpid)])


def test_a_killed_kernel_leaves_nothing_shared(live_kernel):
    kernel, kpid, baseline = kernel_with_x(live_kernel)
    msg_id = kernel.submit("%%thither --bg\n" + WHERE_X + "y = x + 1\nprint('started', flush=True)\n"
                           "import time\nwhile True:\n    time.sleep(0.05)")
    assert kernel.collect(msg_id, timeout=30).error is None
    assert wait_until(lambda: any(shared_holdings(w) for w in workers_of(kpid)), 60), "x never reached a worker"
    tree = [kpid, *workers_of(kpid)]

    kernel.km.shutdown_kernel(now=True)  # SIGKILL

    assert wait_until(lambda: not any(running(p) for p in tree), 10), [p for p in tree if running(p)]
    baseline.nothing_left(tree)
