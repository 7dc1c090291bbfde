"""The local entry point: ``python -m mini_magic.worker``, exec'd by its keeper (see keeper.py).

It reads one JSON line ``{"address": ..., "key": ...}`` from stdin, connects to the kernel's Unix socket and
authenticates before it reads any job, then runs jobs until the kernel says shutdown or the connection ends.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import sys
import threading
import time

from .. import proctree, wire
from ..channel import Channel, ChannelClosed, authenticate_as_worker
from ..scrub import Scrubber
from .bootstrap import start_worker


def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent (the keeper, see keeper.py) goes away, even while a cell is busy (the socket EOF is
    only seen between jobs).

    A fallback: on Linux the keeper set a parent-death signal, which also works while a cell holds the GIL, and the
    keeper itself watches the kernel. Polling because a process started by some other, threaded parent cannot rely
    on PR_SET_PDEATHSIG (it fires when the parent *thread* exits).
    """
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(0)


def main() -> int:
    boot = json.loads(sys.stdin.readline())
    parent_pid = os.getppid()
    # Orphans of whatever a cell starts come to us, not to init: recycling the worker then ends them (proctree).
    proctree.become_subreaper()
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="mini-magic-watchdog", daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only a running cell is interruptible
    # fd 2 is the captured stderr: a native crash's Python stack (faulthandler) then reaches the cell.
    log_fd = boot.get("log_fd", 2)
    faulthandler.enable(file=2, all_threads=True)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(boot["address"])
    authenticate_as_worker(sock, bytes.fromhex(boot["key"]))
    sock.settimeout(None)
    channel = Channel(sock)
    # The values of the secrets this worker was started with are scrubbed from all it sends and logs, for its life.
    scrubber = Scrubber.from_environ(boot.get("secret_keys", ()))
    read_fds = boot.get("capture_fds")
    worker = start_worker(lambda events: channel.send_frames(wire.encode_events(events)), scrubber, log_fd,
                          tuple(read_fds) if read_fds else None)
    while True:
        try:
            frames = channel.recv_frames()
        except ChannelClosed:
            return 0
        control = wire.read_control(frames[0])
        if control["type"] == "shutdown":
            return 0
        if control["type"] == "job":
            worker.handle(frames)


def _profiled(path: str) -> int:
    """``MINI_MAGIC_PROFILE_WORKER=FILE``: the worker's cProfile statistics, written when it shuts down (for the
    benchmarks: where a run's time goes on the remote side)."""
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(main)
    finally:
        profiler.dump_stats(f"{path}.{os.getpid()}")


if __name__ == "__main__":
    sys.exit(_profiled(os.environ["MINI_MAGIC_PROFILE_WORKER"]) if os.environ.get("MINI_MAGIC_PROFILE_WORKER")
             else main())
