"""The keeper: the process the kernel starts for each local worker, the worker's parent, and the end of its tree.

The kernel alone cannot make sure that nothing a cell started outlives its run:

- a worker whose code holds the GIL (a catastrophic regex, a C extension loop) never runs its watchdog thread, so it
  would outlive a killed kernel at full CPU. The keeper is another process, single-threaded and idle: it notices the
  kernel's death within :data:`POLL` seconds whatever the worker does, and ends the worker's whole tree;
- a process the cell started that was orphaned or left the worker's session (``setsid``) belongs to nobody the kernel
  knows once the worker dies. Worker and keeper are child subreapers (see :mod:`mini_magic.proctree`): orphans go to
  the worker while it lives and to the keeper after it crashed, so the keeper ends every one when the worker ends, and
  the kernel ends the whole tree by walking it from the keeper (``WorkerProcess.kill`` in backends/local/process.py).

The keeper forwards SIGINT to the worker and exits with the worker's status (code or signal), so the kernel reports a
crash as before. A run that must survive its kernel (detached; none is local yet) is exempted by SIGUSR1: the keeper
then no longer watches the kernel, and the kernel no longer kills the tree.

Run as ``python -m mini_magic.worker.keeper KERNEL_PID RUNTIME_DIR``. The worker, ``python -m mini_magic.worker``, is
exec'd in a forked child and inherits stdin (its boot line), stdout/stderr and the descriptors the kernel passed. On
the kernel's death the keeper also removes the kernel's runtime directory (sockets, worker logs). Standard library
only.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from typing import Any, NoReturn

from .. import proctree

POLL = 0.25  # seconds between checks that the kernel still lives
_REAP_FOR = 5.0  # seconds to wait for killed descendants (one stuck in the kernel's D state must not hang us)


class Keeper:
    """One keeper's state. Its signal handlers only forward SIGINT or set a flag: Python runs them between two
    steps of :meth:`run`'s loop, which acts on the flags."""

    def __init__(self, worker: int, kernel: int, runtime_dir: str) -> None:
        self.worker = worker
        self.kernel = kernel
        self.runtime_dir = runtime_dir
        self.status: int | None = None  # the worker's wait status, once it ended
        self.detached = False
        self.stop_signal: int | None = None

    def on_interrupt(self, signum: int, frame: Any) -> None:
        if self.worker <= 0:
            return  # not forked yet: a pid of 0 or less would signal a whole process group
        try:
            os.kill(self.worker, signal.SIGINT)
        except ProcessLookupError:
            pass

    def on_detach(self, signum: int, frame: Any) -> None:
        self.detached = True

    def on_stop(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum

    def run(self) -> NoReturn:
        while True:
            self._reap()
            if self.status is not None:
                self._end_tree()
                _exit_like(self.status)
            if self.stop_signal is not None:
                self._end_tree()
                _die_by(self.stop_signal)
            if not self.detached and os.getppid() != self.kernel:
                self._end_tree()
                shutil.rmtree(self.runtime_dir, ignore_errors=True)
                os._exit(0)
            _wait_for_child(POLL)

    def _reap(self) -> None:
        """Reap whatever ended: the worker (keep its status) and adopted orphans (nobody else will)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.worker:
                self.status = status

    def _end_tree(self) -> None:
        proctree.kill_tree(os.getpid(), include_root=False)
        deadline = time.monotonic() + _REAP_FOR
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                time.sleep(0.01)


def _wait_for_child(timeout: float) -> None:
    """Sleep until a child changes state (SIGCHLD is blocked, so none is missed between two waits) or ``timeout``."""
    wait = getattr(signal, "sigtimedwait", None)
    if wait is None:
        time.sleep(timeout)
    else:
        wait({signal.SIGCHLD}, timeout)


def _exit_like(status: int) -> NoReturn:
    """Exit so that our parent sees ``status``, the worker's wait status: the same code, or death by the same signal."""
    if os.WIFSIGNALED(status):
        _die_by(os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _die_by(sig: int) -> NoReturn:
    proctree.no_core_dump()  # the worker already dumped (or not), as its settings said
    try:
        signal.signal(sig, signal.SIG_DFL)
    except (OSError, ValueError):
        pass  # SIGKILL, SIGSTOP: no handler to reset
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.kill(os.getpid(), sig)
    time.sleep(1)  # a signal whose default action is not to terminate
    os._exit(128 + sig)


def main(argv: list[str]) -> NoReturn:
    kernel, runtime_dir = int(argv[0]), argv[1]
    proctree.become_subreaper()
    keeper = Keeper(0, kernel, runtime_dir)
    # Handlers before the fork, so that no signal finds the keeper without one (exec resets them in the worker).
    signal.signal(signal.SIGINT, keeper.on_interrupt)
    signal.signal(signal.SIGUSR1, keeper.on_detach)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, keeper.on_stop)
    keeper_pid = os.getpid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    worker = os.fork()
    if worker == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        # The keeper is single-threaded, so the parent-death signal means exactly "the keeper is gone".
        proctree.die_with_parent(signal.SIGKILL)
        if os.getppid() != keeper_pid:
            os._exit(1)
        try:
            os.execv(sys.executable, [sys.executable, "-m", "mini_magic.worker"])
        except BaseException as exc:  # noqa: BLE001 - never return into the keeper's code
            os.write(2, f"mini_magic: the worker keeper could not start the worker: {exc}\n".encode())
        os._exit(127)
    keeper.worker = worker
    # stdin (the boot line) and the descriptors passed for the worker are the worker's alone; stdout/stderr stay, so
    # a failing keeper still shows up in the cell.
    os.close(0)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    keeper.run()


if __name__ == "__main__":
    main(sys.argv[1:])
