"""Large frames between a kernel and its local worker travel in shared memory, not through the socket.

A frame of at least :data:`MIN_SHARED` bytes is written once into an anonymous memory file (``memfd_create``), sealed
so that it can no longer change size or content, and its descriptor is passed over the Unix socket (``SCM_RIGHTS``).
The receiver maps it copy-on-write: its arrays are backed by the very pages the sender wrote, with no second copy
and no socket traffic, and stay writable (a write copies only the page written).

Why descriptors and not named segments (``/dev/shm``): a memory file has no name, so there is nothing to clean up.
Its pages belong to whoever holds a descriptor or a mapping of it, and the operating system frees them when the last
one goes, however the holder ends: a run interrupted mid-send, a worker that crashes, a kernel killed with
``kill -9`` (a descriptor still in flight in the socket is freed with the socket). No leak is possible that a
process's death does not end.

Where memory files or descriptor passing are missing (not Linux), :func:`available` is False and the channel sends
every frame through the socket. ``MINI_MAGIC_SHARED_MEMORY=0`` forces that path (the benchmarks' baseline).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import resource
import socket
import sys
from typing import Any

MIN_SHARED = 1 << 20  # below this, the socket is as fast and costs no descriptor
_WRITE_CHUNK = 1 << 30  # os.write takes at most ~2 GiB at a time
# A sealed file can neither shrink (a mapping of it would fault: SIGBUS) nor change: what the receiver maps is what
# was sent.
_SEALS = getattr(fcntl, "F_SEAL_SHRINK", 2) | getattr(fcntl, "F_SEAL_GROW", 4) | getattr(fcntl, "F_SEAL_WRITE", 8)
_UNTRACKED_MAPPINGS = sys.version_info >= (3, 13)  # mmap(trackfd=False): a mapping holds no descriptor
_PROT = mmap.PROT_READ | mmap.PROT_WRITE
_MADV_POPULATE_READ = 22  # Linux 5.14: map the pages now (read faults only: copy-on-write pages stay shared)


def available() -> bool:
    """Whether large frames can travel in shared memory on this machine (read at each call: tests toggle it)."""
    if os.environ.get("MINI_MAGIC_SHARED_MEMORY", "1") == "0":
        return False
    return hasattr(os, "memfd_create") and hasattr(socket, "send_fds") and hasattr(fcntl, "F_ADD_SEALS")


def write(view: memoryview) -> int | None:
    """A sealed memory file holding ``view``'s bytes, as a descriptor the caller must close; None when the system
    refuses one (out of descriptors or memory): the frame then goes through the socket."""
    try:
        fd = os.memfd_create("mini_magic", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:
        return None
    try:
        done = 0
        while done < view.nbytes:
            done += os.write(fd, view[done : done + _WRITE_CHUNK])
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def map_received(fd: int, nbytes: int) -> mmap.mmap:
    """Map a received memory file of ``nbytes`` copy-on-write; ``fd`` is closed here whatever happens.

    Refused unless the file is sealed against shrinking and holds exactly ``nbytes``: a file the sender could still
    shrink would make a later read of the mapping crash the receiver (SIGBUS)."""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        size = os.fstat(fd).st_size
        if not seals & fcntl.F_SEAL_SHRINK or size != nbytes:
            raise ValueError(f"a shared frame of {size} bytes (seals {seals:#x}) announced as {nbytes} bytes")
        if _UNTRACKED_MAPPINGS:
            mapping = mmap.mmap(fd, nbytes, flags=mmap.MAP_PRIVATE, prot=_PROT, trackfd=False)
        elif _descriptors_to_spare():
            mapping = mmap.mmap(fd, nbytes, flags=mmap.MAP_PRIVATE, prot=_PROT)  # keeps a duplicate of fd
        else:
            mapping = _copied(fd, nbytes)
    finally:
        os.close(fd)
    _populate(mapping)
    return mapping


def _descriptors_to_spare() -> bool:
    """Before Python 3.13 a mapping keeps a duplicate of its file's descriptor for as long as it lives (and with it
    every array made from it): past half the process's limit on open files, a frame is copied out instead, so that
    many large arrays held in a notebook never exhaust the descriptors."""
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        return True
    return in_use < resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2


def _copied(fd: int, nbytes: int) -> mmap.mmap:
    mapping = mmap.mmap(-1, nbytes)
    view = memoryview(mapping)
    try:
        done = 0
        while done < nbytes:
            got = os.preadv(fd, [view[done : done + _WRITE_CHUNK]], done)
            if got <= 0:
                raise ValueError(f"the shared frame ended after {done} of {nbytes} bytes")
            done += got
    finally:
        view.release()
    return mapping


def _populate(mapping: Any) -> None:
    """Map the pages in one call instead of one fault per 4 KiB page on first use (older kernels: faults as usual)."""
    try:
        mapping.madvise(_MADV_POPULATE_READ)
    except (OSError, ValueError, AttributeError):
        pass
