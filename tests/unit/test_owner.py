"""Unit tests for mini_magic.owner: process identity and the only-when-sure liveness verdict, on real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mini_magic.owner import Owner, process_alive, process_start
from tests.polling import wait_until

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")


def exited_pid() -> int:
    """The pid of a real process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_current_owner_is_this_process() -> None:
    me = Owner.current()
    assert (me.host, me.pid) == (socket.gethostname(), os.getpid())
    assert me.started is not None and me.started == process_start(os.getpid())
    assert str(me) == f"kernel pid {os.getpid()} on {socket.gethostname()}"
    assert Owner.from_json(me.to_json()) == me


@linux_only
def test_start_token_is_boot_id_and_start_ticks() -> None:
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    ticks = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    assert process_start(os.getpid()) == f"{boot}/{ticks}"


def test_a_living_process_is_alive_and_a_dead_one_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        owner = Owner(socket.gethostname(), child.pid, process_start(child.pid))
        assert owner.started is not None
        assert not owner.dead_for(Owner.current())
    finally:
        child.kill()
        child.wait()
    assert owner.dead_for(Owner.current())
    assert not process_alive(child.pid, owner.started)


def test_a_reused_pid_is_not_the_owner() -> None:
    # This very pid, but another process start (or another boot): the owner is gone and the pid was reused.
    here = Owner.current()
    assert Owner(here.host, here.pid, "another-boot/12345").dead_for(here)
    assert not Owner(here.host, here.pid, None).dead_for(here)  # no start time: cannot tell, so alive


def test_another_host_is_never_judged() -> None:
    pid = exited_pid()
    here = Owner.current()
    assert Owner(here.host, pid, "x/1").dead_for(here)
    assert not Owner("node-b.cluster", pid, "x/1").dead_for(here)  # a shared home: node-b's pids mean nothing here


@pytest.mark.parametrize("data", [None, "x", {}, {"host": "h", "pid": "7", "started": None},
                                  {"host": "h", "pid": 0, "started": None}, {"host": "h", "pid": -1, "started": None},
                                  {"host": "h", "pid": True, "started": None}, {"host": 3, "pid": 7, "started": None}])
def test_malformed_owners_are_not_owners(data: object) -> None:
    assert Owner.from_json(data) is None  # never judged, never a process group for os.kill


def test_a_zombie_is_dead() -> None:
    # A kernel killed with SIGKILL stays a zombie until its parent (the Jupyter server) reaps it; it runs no code.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        started = process_start(child.pid)
        assert wait_until(lambda: not process_alive(child.pid, started))
        assert child.poll() is not None  # ... yet it was still there, unreaped, until this poll
    finally:
        child.wait()


def test_the_ps_fallback_of_other_posix_systems(monkeypatch: pytest.MonkeyPatch) -> None:
    # Real `ps`, as on macOS: only the /proc reader is switched off.
    monkeypatch.setattr(sys, "platform", "darwin")
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        started = process_start(child.pid)
        assert started is not None and process_alive(child.pid, started)
        assert not process_alive(child.pid, "Mon Jan  1 00:00:00 2001")  # the pid was reused
    finally:
        child.kill()
        child.wait()
    assert process_start(child.pid) is None and not process_alive(child.pid, started)

