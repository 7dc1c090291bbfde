"""Worker side: the event sender and file-descriptor level capture of stdout/stderr.

Capturing at the file-descriptor level (``dup2`` of pipes onto fds 1 and 2) is what makes output of subprocesses,
``logging``, and C/CUDA libraries stream back, not only Python ``print``. Standard library only.
"""

from __future__ import annotations

import codecs
import ctypes
import fcntl
import io
import os
import select
import sys
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

from .wire import Event, Stderr, Stdout

_libc: Any
try:
    _libc = ctypes.CDLL(None)
except OSError:  # pragma: no cover - exotic platforms
    _libc = None


def flush_c_stdio() -> None:
    """C libraries buffer stdout when it is not a terminal; flush them so their output is not held back."""
    if _libc is not None:
        try:
            _libc.fflush(None)
        except Exception:  # noqa: BLE001 - best effort
            pass


class EventSender:
    """Numbers events and hands them to ``send`` (thread-safe; events from several threads keep one order).

    Every text that leaves the worker passes here, so this is where exact secret values are scrubbed from output,
    displays and error messages (best effort: a value split across two reads of a pipe is not recognised).
    """

    def __init__(self, send: Callable[[list[Event]], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._seq = 0
        self.secrets: tuple[str, ...] = ()

    def emit(self, cls: type[Event], **fields: Any) -> None:
        if self.secrets:
            fields = {k: _scrub(v, self.secrets) for k, v in fields.items()}
        with self._lock:
            self._seq += 1
            event = cls(seq=self._seq, **fields)
            self._send([event])


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "********")
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    return value


def _pending_bytes(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


class OutputCapture:
    """Forward what is written to fds 1 and 2 as Stdout/Stderr events, from one reader thread.

    ``read_fds`` are the read ends of pipes that fds 1 and 2 already write into: the local backend creates them
    and keeps its own copy of the read ends, so output written just before a crash can still be drained by the
    kernel after the worker died. Without them (a remote container) the worker makes the pipes itself.
    Outside a run (``active`` is False) captured text goes to ``fallback_fd`` (the worker's log), so stray output
    of a previous run's leftovers never lands in the next cell.
    """

    def __init__(self, sender: EventSender, fallback_fd: int, read_fds: tuple[int, int] | None = None) -> None:
        self.sender = sender
        self._fallback_fd = fallback_fd
        self.active = False
        self._busy = False
        self._streams: dict[int, tuple[type[Event], codecs.IncrementalDecoder]] = {}
        self._read_fds: list[int] = []
        for index, (target, event) in enumerate(((1, Stdout), (2, Stderr))):
            if read_fds is None:
                read_fd, write_fd = os.pipe()
                os.dup2(write_fd, target)
                os.close(write_fd)
            else:
                read_fd = read_fds[index]
            self._streams[read_fd] = (event, codecs.getincrementaldecoder("utf-8")(errors="replace"))
            self._read_fds.append(read_fd)
        # Python-level streams: unbuffered writes to the (now redirected) fds, so a print reaches the pipe at once
        # and keeps its order relative to C-level writes on the same fd.
        sys.stdout = _text_stream(1)
        sys.stderr = _text_stream(2)
        self._thread = threading.Thread(target=self._pump, name="mini-magic-capture", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            ready, _, _ = select.select(self._read_fds, [], [], 0.05)
            if not ready:
                continue
            self._busy = True
            try:
                for fd in ready:
                    self._forward(fd, os.read(fd, 65536))
            finally:
                self._busy = False

    def _forward(self, fd: int, data: bytes) -> None:
        event, decoder = self._streams[fd]
        if not self.active:
            os.write(self._fallback_fd, data)
            return
        text = decoder.decode(data)
        if text:
            self.sender.emit(event, text=text)

    def sync(self, timeout: float = 2.0) -> None:
        """Return once everything written so far has been forwarded (called before Display/Result events so that
        output keeps its order relative to them)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        flush_c_stdio()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._busy and all(_pending_bytes(fd) == 0 for fd in self._read_fds) and not self._busy:
                return
            time.sleep(0.0005)


def _text_stream(fd: int) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", line_buffering=True, write_through=True)
