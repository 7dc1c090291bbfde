"""Process trees with real processes: every descendant is found and ended, also those in a session of their own and
those forked while the tree is being ended."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mini_magic import proctree
from tests.polling import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process trees are read from /proc")


def running(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def marked(marker: str) -> list[int]:
    """Running processes whose command line is ``sleep <marker>``: found even after they left the tree."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep",
                                                                                             marker.encode()]:
                found.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in found if running(pid)]


def end(marker: str) -> None:
    for pid in marked(marker):
        os.kill(pid, 9)


def test_kill_tree_ends_grandchildren_in_sessions_of_their_own():
    marker = "3001"
    root = subprocess.Popen(["sh", "-c", f"setsid sleep {marker} & sh -c 'sleep {marker} & wait' & wait"])
    try:
        assert wait_until(lambda: len(marked(marker)) == 2)
        below = proctree.descendants(root.pid)
        assert set(marked(marker)) <= set(below), below
        sessions = {int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3]) for pid in marked(marker)}
        assert len(sessions) == 2, "the setsid sleep should be in a session of its own"

        signalled = proctree.kill_tree(root.pid)

        assert root.pid in signalled and set(below) <= set(signalled)
        root.wait(10)
        assert wait_until(lambda: marked(marker) == []), marked(marker)
    finally:
        root.kill()
        root.wait()
        end(marker)


def test_kill_tree_ends_a_tree_that_forks_while_it_is_being_ended():
    # The shell forks as fast as it can: a walk that killed as it went would leave sleeps forked behind it.
    marker = "3002"
    root = subprocess.Popen(["sh", "-c", f"i=0; while [ $i -lt 400 ]; do sleep {marker} & i=$((i+1)); done; wait"])
    try:
        assert wait_until(lambda: len(marked(marker)) >= 20)
        proctree.kill_tree(root.pid)
        root.wait(10)
        assert wait_until(lambda: marked(marker) == []), f"{len(marked(marker))} sleeps outlived their tree"
    finally:
        root.kill()
        root.wait()
        end(marker)


def test_kill_tree_of_a_process_that_is_gone_signals_nothing():
    done = subprocess.Popen(["true"])
    done.wait()
    assert proctree.kill_tree(done.pid) == []


def test_has_children_sees_running_and_unwaited_children_and_reaps_nothing():
    code = (
        "import os, subprocess, time\n"
        "from mini_magic import proctree\n"
        "print(proctree.has_children())\n"
        "subprocess.run(['true'])\n"
        "print(proctree.has_children())\n"
        "p = subprocess.Popen(['sleep', '30'])\n"
        "print(proctree.has_children())\n"
        "p.kill(); time.sleep(0.2)\n"
        "print(proctree.has_children())\n"  # a zombie: still ours until waited for
        "print(p.wait())\n"  # and its status is still there for the Popen
        "print(proctree.has_children())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True", "True", "-9", "False"]


def test_a_subreaper_adopts_orphans_that_left_its_session():
    code = (
        "import os, subprocess, time\n"
        "from mini_magic import proctree\n"
        "print(proctree.become_subreaper())\n"
        "out = subprocess.run('setsid sleep 3003 > /dev/null 2>&1 & echo $!', shell=True, capture_output=True,"
        " text=True).stdout\n"
        "orphan = int(out)\n"
        "time.sleep(0.2)\n"
        "print(orphan in proctree.descendants(os.getpid()), proctree.has_children())\n"
        "proctree.kill_tree(os.getpid(), include_root=False)\n"
        "os.waitpid(orphan, 0)\n"
        "print(proctree.has_children())\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             timeout=30).stdout
    finally:
        end("3003")
    assert out.split() == ["True", "True", "True", "False"]
