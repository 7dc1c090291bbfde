"""Process trees: find every process below a worker and end them all, however they tried to get away.

A cell may start processes that outlive it: ``!sleep 300 &`` (the shell exits, ``sleep`` is orphaned),
``subprocess.Popen(..., start_new_session=True)`` (a new session and process group), a daemon that double-forks.
Signalling one pid or one process group (``killpg``) misses them all. What does not miss them:

- **Child subreapers** (Linux ``PR_SET_CHILD_SUBREAPER``): an orphan is re-parented to its nearest subreaper ancestor
  instead of init, whatever its session or group. The worker and its keeper are subreapers, so everything a cell
  starts stays in the keeper's tree, found by following parent links.
- **Stop, then kill** (:func:`kill_tree`): a process that gets SIGSTOP can no longer fork (Linux restarts a fork that
  a signal interrupts) or exit, so a tree walked again after each round of SIGSTOP is complete once a walk finds no
  new pid; only then does every member get SIGKILL. Killing while walking would let a dying parent's children
  re-parent behind the walk.

Linux only where it matters (``/proc``, ``prctl``); elsewhere the functions degrade to the worker's process group and
stay importable. Standard library only: the worker side (keeper and worker) uses this module too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable

_LINUX = sys.platform.startswith("linux")
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    if not _LINUX:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphaned descendants of this process are re-parented to it, not to init (False where unsupported)."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Get ``sig`` when the parent *thread* exits. Only sound when the parent is single-threaded (the keeper)."""
    return _prctl(_PR_SET_PDEATHSIG, sig)


def no_core_dump() -> None:
    """Before a process re-raises a fatal signal only to report it (the keeper mirroring its worker's death)."""
    if not _prctl(_PR_SET_DUMPABLE, 0):
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (ImportError, ValueError, OSError):
            pass


def has_children() -> bool:
    """Whether this process has a child, running or exited and not yet waited for. One system call, no /proc walk,
    and nothing is reaped (``WNOWAIT``), so a ``Popen`` the cell keeps still gets its exit status."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except (AttributeError, OSError):
        return False  # no waitid here: nothing can be told cheaply
    return True


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on; the command name may hold spaces and parentheses."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid``; None where /proc cannot tell (the process is gone, or no /proc)."""
    fields = _stat(pid)
    return int(fields[1]) if fields is not None else None


def _children_files_exist() -> bool:
    return os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _children_lookup() -> Callable[[int], list[int]]:
    """``children(pid)`` from one consistent source: the per-thread ``children`` files where the kernel has them
    (CONFIG_PROC_CHILDREN), else one scan of every /proc/<pid>/stat for parent links."""
    if _children_files_exist():

        def from_files(pid: int) -> list[int]:
            found: list[int] = []
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                return found
            for tid in tasks:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                        found.extend(int(p) for p in f.read().split())
                except OSError:
                    continue
            return found

        return from_files
    table: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields is not None:
                table.setdefault(int(fields[1]), []).append(int(name))
    return lambda pid: table.get(pid, [])


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (not ``root`` itself), parents before children; [] without /proc."""
    if not _LINUX:
        return []
    children = _children_lookup()
    found: list[int] = []
    seen = {root}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child in children(pid):
            if child not in seen:
                seen.add(child)
                found.append(child)
                frontier.append(child)
    return found


def describe(pids: list[int]) -> str:
    """``sleep (pid 12), sh (pid 13)``: for messages that name leftover processes."""
    names = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                name = f.read().decode("utf-8", "replace").strip()
        except OSError:
            name = "?"
        names.append(f"{name} (pid {pid})")
    return ", ".join(names)


def _send(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False  # gone already, or not ours (a setuid program): nothing we may do
    return True


def _wait_stopped(pids: list[int], timeout: float = 1.0) -> None:
    """Wait until each process has really stopped (or is gone). kill() only queues SIGSTOP: a process still running
    on another CPU can fork once more after it returned, and a walk made before that fork would miss the child."""
    deadline = time.monotonic() + timeout
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        pending = [pid for pid in pending if (fields := _stat(pid)) is not None and fields[0] not in ("T", "t", "Z", "X")]
        if pending:
            time.sleep(0.0005)


def kill_tree(root: int, *, include_root: bool = True) -> list[int]:
    """SIGKILL everything below ``root``, and ``root`` itself unless ``include_root`` is False; returns the pids
    signalled. Does not wait: each process's parent reaps it. Sparing the root matters when the root is a subreaper
    that reaps what it is left with (the keeper): killed with its tree, the tree's zombies would go to init, which
    does not always reap (a container whose pid 1 is no init).

    Without /proc (not Linux), the tree is the root's process group (the keeper leads one, in its own session),
    which cannot spare its root: a process never signals its own group this way.
    """
    if not _LINUX:
        if root == os.getpid():
            return []
        try:
            os.killpg(os.getpgid(root), signal.SIGKILL)
        except OSError:
            _send(root, signal.SIGKILL)
        return [root]
    stopped: list[int] = []
    if include_root and _send(root, signal.SIGSTOP):
        stopped.append(root)
    _wait_stopped(stopped)
    tried = set(stopped)
    while True:
        new = [pid for pid in descendants(root) if pid not in tried]
        if not new:
            break  # everything below root is stopped: the tree cannot change any more
        tried.update(new)
        batch = [pid for pid in new if _send(pid, signal.SIGSTOP)]
        _wait_stopped(batch)
        stopped.extend(batch)
    for pid in stopped:
        _send(pid, signal.SIGKILL)
    return stopped


__all__ = ["become_subreaper", "describe", "descendants", "die_with_parent", "has_children", "kill_tree",
           "no_core_dump"]
