"""Who owns a run: the process that recorded it (host, pid, start time), and whether that process still lives.

The run store outlives kernels, so a kernel that dies without closing (``kill -9``, a crash, the OOM killer) leaves
its runs non-terminal. The next kernel may end them for it, but only when it can be sure the owner is dead:

- a pid alone is reused, so an owner is a pid *and* that process's start time (Linux: field 22 of
  ``/proc/<pid>/stat``, clock ticks since boot, qualified by the boot id so a reboot counts as a death; other POSIX
  systems: ``ps -o lstart``, the wall-clock start);
- a store may be shared between machines (a home directory on a cluster), and a pid means nothing on another host:
  an owner is only ever judged on its own host;
- a zombie (exited, not yet reaped by its parent) is dead: it runs no code;
- where nothing can be known for sure (no start time, not POSIX), the owner counts as alive.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class Owner:
    """A process on a host, identified so that a reused pid is never mistaken for it."""

    host: str
    pid: int
    started: str | None  # see process_start(); None where it cannot be read

    @classmethod
    def current(cls) -> Owner:
        """This process. Costs a few file reads (a ``ps`` call off Linux): compute it once, not per run."""
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start(pid))

    def __str__(self) -> str:
        return f"kernel pid {self.pid} on {self.host}"

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "started": self.started}

    @classmethod
    def from_json(cls, data: Any) -> Owner | None:
        """The owner a record stored, or None for records of older versions (or malformed ones): never judged."""
        if not isinstance(data, dict):
            return None
        host, pid, started = data.get("host"), data.get("pid"), data.get("started")
        if not isinstance(host, str) or type(pid) is not int or pid <= 0 or not isinstance(started, (str, type(None))):
            return None  # pid 0 or below would name a process group in process_alive's probe
        return cls(host, pid, started)

    def dead_for(self, judge: Owner) -> bool:
        """Whether ``judge`` (a process on some host) can be sure this owner no longer runs.

        Only on the same host, and only when no process with this pid and this start time exists there.
        """
        if self.host != judge.host:
            return False  # another machine's pid: not ours to judge, however the store is shared
        if self == judge:
            return False
        return not process_alive(self.pid, self.started)


def process_start(pid: int) -> str | None:
    """A token that differs between two processes that had the same pid; None if unreadable (or no such process).

    Linux: ``<boot id>/<start ticks>``. Elsewhere on POSIX: the start time ``ps`` prints (one second resolution, a
    wall-clock time that a reboot changes too).
    """
    status = _status(pid)
    return status[1] if status is not None else None


def process_alive(pid: int, started: str | None) -> bool:
    """Whether the process ``pid`` that started at ``started`` may still run on this host (True when unsure)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) is no probe on Windows: it would stop the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    except OSError:
        return True
    status = _status(pid)
    if status is None:
        return True  # the pid is in use but unreadable: cannot tell
    state, now = status
    if state.startswith("Z"):
        return False  # exited, only not yet reaped by its parent: it runs no code any more
    return started is None or now == started  # no start time recorded: a reused pid cannot be told apart


def _status(pid: int) -> tuple[str, str] | None:
    """(state letter, start token) of ``pid``, or None if there is no such process or it cannot be read."""
    if sys.platform.startswith("linux"):
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
            # The command name (field 2) may hold spaces and parentheses: count fields from the last ')'.
            fields = text[text.rindex(")") + 2:].split()
            state, ticks = fields[0], fields[19]  # fields[0] is field 3 (state), fields[19] field 22 (starttime)
        except (OSError, ValueError, IndexError):
            return None
        try:
            boot = _BOOT_ID.read_text().strip()
        except OSError:
            boot = ""
        return state, f"{boot}/{ticks}"
    if os.name != "posix":
        return None
    try:
        # One spelling of the start time, whatever the locale or time zone of the kernel that asks.
        done = subprocess.run(["ps", "-o", "stat=", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True,
                              timeout=10, check=False, env={**os.environ, "LC_ALL": "C", "TZ": "UTC"})
    except (OSError, subprocess.SubprocessError):
        return None
    words = done.stdout.split()
    if done.returncode != 0 or len(words) < 2:
        return None
    return words[0], " ".join(words[1:])


__all__ = ["Owner", "process_alive", "process_start"]
