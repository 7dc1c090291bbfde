"""The kernel <-> local worker channel: mutual HMAC authentication, then length-prefixed multi-frame messages.

Over a Unix socket in a private directory (the socket is 0600, the directory 0700), a connection is of no use to a
peer that does not hold the per-worker key: the kernel challenges first, so an impostor learns nothing, and the
worker checks the kernel's proof before it reads a single job frame.
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import os
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Any

from . import shared_frames

_COUNT = struct.Struct("!I")
_LENGTH = struct.Struct("!Q")
_SMALL_FRAME = 1 << 20  # read into a bytearray; larger frames into memory that exists only as bytes arrive
_SHARED = 1 << 63  # in a frame's length: its bytes are in a memory file whose descriptor follows (shared_frames)


class ChannelClosed(EOFError):
    """The peer closed the connection."""


class Channel:
    """Length-prefixed multi-frame messages over a stream socket; send is thread-safe, recv is single-reader."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send_frames(self, frames: Sequence[Any]) -> None:
        views = [memoryview(f).cast("B") for f in frames]
        # Large frames are written to shared memory before the lock is taken: other threads keep sending meanwhile.
        shared = self._share(views)
        try:
            lengths = [v.nbytes | (_SHARED if i in shared else 0) for i, v in enumerate(views)]
            head = _COUNT.pack(len(views)) + b"".join(_LENGTH.pack(n) for n in lengths)
            with self._send_lock:
                # One syscall for the leading small frames (a whole job or event batch, usually).
                start = 0
                size = len(head)
                while start < len(views) and start not in shared and size + views[start].nbytes < 65536:
                    size += views[start].nbytes
                    start += 1
                self.sock.sendall(b"".join([head, *views[:start]]) if start else head)
                for i in range(start, len(views)):
                    if i in shared:
                        # One byte carries each descriptor, so a reader that reads exact lengths gets it with that
                        # byte and no other read can swallow it.
                        socket.send_fds(self.sock, [b"\0"], [shared[i]])
                    else:
                        self.sock.sendall(views[i])
        finally:
            for fd in shared.values():
                os.close(fd)

    @staticmethod
    def _share(views: Sequence[memoryview]) -> dict[int, int]:
        """Index -> descriptor of a sealed memory file, for the frames that go through shared memory."""
        shared: dict[int, int] = {}
        if not any(v.nbytes >= shared_frames.MIN_SHARED for v in views) or not shared_frames.available():
            return shared
        try:
            for i, view in enumerate(views):
                if view.nbytes >= shared_frames.MIN_SHARED:
                    fd = shared_frames.write(view)
                    if fd is not None:
                        shared[i] = fd
        except BaseException:
            for fd in shared.values():
                os.close(fd)
            raise
        return shared

    def recv_frames(self) -> list[bytearray | mmap.mmap]:
        """One message's frames, as bytes-like objects (a large frame is an ``mmap``: of shared memory the sender
        wrote, or anonymous memory filled from the socket)."""
        (count,) = _COUNT.unpack(self._recv_exact(_COUNT.size))
        lengths = [_LENGTH.unpack(self._recv_exact(_LENGTH.size))[0] for _ in range(count)]
        return [self._recv_shared(n & ~_SHARED) if n & _SHARED else self._recv_exact(n) for n in lengths]

    def _recv_shared(self, n: int) -> mmap.mmap:
        message, fds, flags, _ = socket.recv_fds(self.sock, 1, 1)
        if not message:
            for fd in fds:
                os.close(fd)
            raise ChannelClosed("the peer closed the connection")
        if len(fds) != 1 or flags & socket.MSG_CTRUNC:
            for fd in fds:
                os.close(fd)
            raise ChannelClosed("a shared frame arrived without its memory file")
        try:
            return shared_frames.map_received(fds[0], n)
        except (OSError, ValueError) as exc:
            raise ChannelClosed(f"a shared frame of {n} bytes could not be mapped here ({exc})") from None

    def _recv_exact(self, n: int) -> bytearray | mmap.mmap:
        buf: bytearray | mmap.mmap
        if n <= _SMALL_FRAME:
            buf = bytearray(n)
        else:
            # A length is only a claim until its bytes arrive. An anonymous mapping reserves address space, and the
            # kernel gives it memory page by page as recv_into writes, so a false multi-GB length costs nothing
            # while a real multi-GB buffer is still received in place, with no copy (and no zero-filling pass).
            try:
                buf = mmap.mmap(-1, n)
            except (OSError, OverflowError, ValueError) as exc:
                raise ChannelClosed(f"a frame of {n} bytes cannot be received here ({exc})") from None
        view = memoryview(buf)
        got = 0
        try:
            while got < n:
                k = self.sock.recv_into(view[got:], n - got)
                if k == 0:
                    raise ChannelClosed("the peer closed the connection")
                got += k
        finally:
            view.release()
        return buf

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


_AUTH_MAGIC = b"MINIMAGIC-AUTH-1"
_NONCE = 32


class AuthenticationFailed(ConnectionError):
    """The peer did not prove it holds the channel key."""


def _proof(key: bytes, role: bytes, nonce: bytes) -> bytes:
    return hmac.new(key, role + nonce, hashlib.sha256).digest()


def _recv_fixed(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AuthenticationFailed("the peer closed the connection during authentication")
        data += chunk
    return data


def authenticate_as_kernel(sock: socket.socket, key: bytes) -> None:
    """Challenge the worker first (so an impostor learns nothing), then answer its challenge."""
    nonce = os.urandom(_NONCE)
    sock.sendall(_AUTH_MAGIC + nonce)
    if not hmac.compare_digest(_recv_fixed(sock, 32), _proof(key, b"worker", nonce)):
        sock.sendall(b"\x00")
        raise AuthenticationFailed("the worker did not prove it holds the key; connection refused")
    sock.sendall(b"\x01")
    worker_nonce = _recv_fixed(sock, _NONCE)
    sock.sendall(_proof(key, b"kernel", worker_nonce))


def authenticate_as_worker(sock: socket.socket, key: bytes) -> None:
    head = _recv_fixed(sock, len(_AUTH_MAGIC) + _NONCE)
    if not head.startswith(_AUTH_MAGIC):
        raise AuthenticationFailed("the peer does not speak the mini_magic channel protocol")
    sock.sendall(_proof(key, b"worker", head[len(_AUTH_MAGIC) :]))
    if _recv_fixed(sock, 1) != b"\x01":
        raise AuthenticationFailed("the kernel refused this worker's key")
    nonce = os.urandom(_NONCE)
    sock.sendall(nonce)
    if not hmac.compare_digest(_recv_fixed(sock, 32), _proof(key, b"kernel", nonce)):
        raise AuthenticationFailed("the peer did not prove it holds the key; refusing to run anything")
