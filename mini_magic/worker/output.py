"""The event sender and file-descriptor level capture of stdout/stderr.

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
from errno import EAGAIN
from typing import Any

from ..scrub import Scrubber, StreamScrubber
from ..wire import Event, Stderr, Stdout

# How long text that may be the start of a secret value is held back when nothing more arrives (sync() passes it
# on at once): the pieces of one value written by two calls arrive microseconds apart.
HOLD_SECONDS = 0.25

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

    Every event the worker sends passes here: the worker's single exit, where ``scrubber`` masks secret values in
    every text field (output, displays, error messages, tracebacks, progress descriptions).
    """

    def __init__(self, send: Callable[[list[Event]], None], scrubber: Scrubber | None = None) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._seq = 0
        self.scrubber = scrubber if scrubber is not None else Scrubber()

    def emit(self, cls: type[Event], **fields: Any) -> None:
        if self.scrubber:
            fields = {k: self.scrubber.scrub_fields(v) for k, v in fields.items()}
        with self._lock:
            self._seq += 1
            event = cls(seq=self._seq, **fields)
            self._send([event])

    def connect(self, send: Callable[[list[Event]], None]) -> None:
        """Send from now on through ``send``, numbering from 1 again: a transport that lasts one run (Modal's
        queue) reconnects the one sender that the worker, the capture and the display bridge all share."""
        with self._lock:
            self._send = send
            self._seq = 0


def _libc_tee() -> Any:
    """Linux's tee(2): copy bytes out of a pipe without consuming them (None where the platform lacks it)."""
    try:
        tee = getattr(ctypes.CDLL(None, use_errno=True), "tee", None)
    except OSError:  # pragma: no cover - exotic platforms
        return None
    if tee is not None:
        tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
        tee.restype = ctypes.c_ssize_t
    return tee


_SPLICE_F_NONBLOCK = 2


class _PipePeek:
    """Read a pipe's bytes without taking them out of it, so that whoever else holds its read end (the kernel) still
    finds them if this process dies before passing them on; :meth:`consume` takes them out once they have gone.

    Without it the pump's read and its event are not atomic: a worker dying between the two (``os._exit`` right
    after a print, a segfault while faulthandler writes) lost exactly the last words the kernel drains the pipes
    for. tee(2) copies the pipe's content into a private pipe; the bytes stay queued in the original.
    """

    def __init__(self, tee: Any) -> None:
        self._tee = tee
        self._read, self._write = os.pipe()

    def peek(self, fd: int, size: int = 65536) -> bytes:
        """Up to ``size`` bytes from the front of the pipe ``fd``, left in it (b"" when it is empty)."""
        copied = self._tee(fd, self._write, size, _SPLICE_F_NONBLOCK)
        if copied < 0:
            errno = ctypes.get_errno()
            if errno == EAGAIN:
                return b""
            raise OSError(errno, os.strerror(errno))
        data = b""
        while len(data) < copied:
            data += os.read(self._read, copied - len(data))
        return data

    @staticmethod
    def consume(fd: int, size: int) -> None:
        while size > 0:
            size -= len(os.read(fd, size))


def _pending_bytes(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


class _Stream:
    """One captured fd: the event its text becomes, its UTF-8 decoder and its scrubber."""

    def __init__(self, event: type[Event], scrubber: Scrubber) -> None:
        self.event = event
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.scrub: StreamScrubber = scrubber.stream()


class OutputCapture:
    """Forward what is written to fds 1 and 2 as Stdout/Stderr events, from one reader thread.

    ``read_fds`` are the read ends of pipes that fds 1 and 2 already write into: the local backend creates them
    and keeps its own copy of the read ends, so output written just before a crash can still be drained by the
    kernel after the worker died. Without them (a remote container) the worker makes the pipes itself.
    Outside a run (``active`` is False) captured text goes to ``fallback_fd`` (the worker's log), so stray output
    of a previous run's leftovers never lands in the next cell. Either way it is scrubbed first, stream by stream
    (the sender's scrubber, for the worker's whole life): the log's tail is shown when the worker crashes.
    """

    def __init__(self, sender: EventSender, fallback_fd: int, read_fds: tuple[int, int] | None = None) -> None:
        self.sender = sender
        self._fallback_fd = fallback_fd
        self.active = False
        self._busy = False
        self._lock = threading.Lock()  # the reader thread's forwarding against sync()'s flush of held text
        self._streams: dict[int, _Stream] = {}
        self._read_fds: list[int] = []
        # Only pipes the kernel also reads need their bytes left in place until forwarded (see _PipePeek).
        tee = _libc_tee() if read_fds is not None else None
        self._peek = _PipePeek(tee) if tee is not None else None
        for index, (target, event) in enumerate(((1, Stdout), (2, Stderr))):
            if read_fds is None:
                read_fd, write_fd = os.pipe()
                os.dup2(write_fd, target)
                os.close(write_fd)
            else:
                read_fd = read_fds[index]
            self._streams[read_fd] = _Stream(event, sender.scrubber)
            self._read_fds.append(read_fd)
        # Python-level streams: unbuffered writes to the (now redirected) fds, so a print reaches the pipe at once
        # and keeps its order relative to C-level writes on the same fd.
        sys.stdout = _text_stream(1)
        sys.stderr = _text_stream(2)
        self._thread = threading.Thread(target=self._pump, name="mini-magic-capture", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        last_read = time.monotonic()
        while True:
            ready, _, _ = select.select(self._read_fds, [], [], 0.05)
            self._busy = True
            try:
                with self._lock:
                    if not ready and time.monotonic() - last_read > HOLD_SECONDS:
                        self._flush_held()  # the stream paused: what was held back did not go on into a value
                    for fd in ready:
                        self._forward(fd)
                        last_read = time.monotonic()
            finally:
                self._busy = False

    def _forward(self, fd: int) -> None:
        stream = self._streams[fd]
        if self._peek is None:
            self._pass_on(stream, stream.scrub.feed(stream.decoder.decode(os.read(fd, 65536))))
            return
        try:
            data = self._peek.peek(fd)
        except OSError:  # not a pipe after all: read as everywhere else
            self._peek = None
            self._forward(fd)
            return
        self._pass_on(stream, stream.scrub.feed(stream.decoder.decode(data)))
        self._peek.consume(fd, len(data))

    def _flush_held(self) -> None:
        for stream in self._streams.values():
            self._pass_on(stream, stream.scrub.flush())

    def _pass_on(self, stream: _Stream, text: str) -> None:
        if not text:
            return
        if self.active:
            self.sender.emit(stream.event, text=text)
        else:
            os.write(self._fallback_fd, text.encode())

    def sync(self, timeout: float = 2.0) -> None:
        """Return once everything written so far has been forwarded (called before Display/Result events so that
        output keeps its order relative to them, and around runs so that text goes where it belongs)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        flush_c_stdio()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._busy and all(_pending_bytes(fd) == 0 for fd in self._read_fds) and not self._busy:
                break
            time.sleep(0.0005)
        with self._lock:
            self._flush_held()


def _text_stream(fd: int) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", line_buffering=True, write_through=True)
