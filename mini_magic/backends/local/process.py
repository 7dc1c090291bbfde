"""The kernel's handle on one local worker process: spawned fresh (never a fork of the threaded kernel), in its own
process session, connected back over an authenticated Unix socket.

Its own session matters: Jupyter's interrupt signals the kernel's whole process group, and that must reach only
the worker running the interrupted cell (the kernel forwards it), never idle workers or background runs.

The kernel's child is each worker's keeper (mini_magic/worker/keeper.py), whose child is the worker: the keeper ends
the worker's whole process tree when the kernel dies, whatever the worker's code is doing, and after the worker
crashed. Stopping a worker here ends its tree too (proctree.kill_tree), so no process a run started outlives it.
Standard library and the wire/channel contract only, like the pool.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count

from ... import proctree
from ...channel import AuthenticationFailed, Channel, ChannelClosed, authenticate_as_kernel
from ...scrub import Scrubber
from ...wire import Event, decode_events

log = logging.getLogger("mini_magic.workers")

START_TIMEOUT = 60.0
_ids = count(1)


def _peer_pid(conn: socket.socket) -> int | None:
    """The pid of the process at the other end of a Unix socket; None where the platform cannot tell."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        pid, _uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    except OSError:
        return None
    return pid


class WorkerStartError(RuntimeError):
    """A worker process did not start and authenticate."""


@dataclass(frozen=True)
class WorkerProfile:
    """The environment a worker process is started with; warm workers are reused only for the same profile,
    because some variables (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS, LD_LIBRARY_PATH…) only act at start-up."""

    environ: tuple[tuple[str, str], ...]
    secret_keys: tuple[str, ...] = ()  # variables of ``environ`` that hold secrets (--secret)

    @classmethod
    def from_env(cls, environ: dict[str, str], secret_keys: tuple[str, ...] = ()) -> WorkerProfile:
        return cls(tuple(sorted(environ.items())), tuple(sorted(set(secret_keys))))

    def scrubber(self) -> Scrubber:
        """The secret values of this profile, masked in everything read from its workers outside the event stream
        (the workers themselves mask them in all they send and log)."""
        return Scrubber.from_environ(self.secret_keys, dict(self.environ))


def _worker_pythonpath(environ: dict[str, str]) -> dict[str, str]:
    """Make sure the worker imports this very mini_magic (e.g. a development checkout)."""
    package_parent = os.path.abspath(__file__)
    for _ in range(4):  # mini_magic/backends/local/process.py -> the directory that holds mini_magic
        package_parent = os.path.dirname(package_parent)
    if "site-packages" in package_parent:
        return environ
    existing = environ.get("PYTHONPATH", "")
    paths = [package_parent, *(p for p in existing.split(os.pathsep) if p)]
    return {**environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


class WorkerProcess:
    """One worker process and the thread that reads its events.

    ``on_events(worker, events)`` is called on the reader thread; ``on_exit(worker, returncode, log_tail,
    (stdout, stderr))`` once, when the connection ends (the process is then reaped; the texts are output it wrote
    but never forwarded). Both texts, and every log tail, are scrubbed of the profile's secret values: this is the
    kernel's single entry for what it reads from a worker outside the event stream.
    """

    def __init__(
        self,
        profile: WorkerProfile,
        *,
        socket_dir: str,
        cwd: str,
        on_events: Callable[[WorkerProcess, list[Event]], None],
        on_exit: Callable[[WorkerProcess, int | None, str, tuple[str, str]], None],
        key: bytes | None = None,
    ) -> None:
        self.profile = profile
        self.id = next(_ids)
        self._on_events = on_events
        self._on_exit = on_exit
        self.log_path = os.path.join(socket_dir, f"worker-{self.id}.log")
        self.returncode: int | None = None
        self.last_used = time.monotonic()
        self.jobs_ended = 0.0  # monotonic time its last job ended, for the pool's choice (0: never ran one)
        self._scrubber = profile.scrubber()
        self.detached = False
        key = key if key is not None else os.urandom(32)
        address = os.path.join(socket_dir, f"worker-{self.id}.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The worker's stdout/stderr are pipes; the kernel keeps a copy of their read ends (unused while the worker
        # lives) so that whatever the worker wrote just before dying can still be shown (see drain_output).
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self._capture_fds: tuple[int, ...] = (out_r, err_r)
        try:
            listener.bind(address)
            os.chmod(address, 0o600)
            listener.listen(4)
            with open(self.log_path, "wb") as log_file:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "mini_magic.worker.keeper", str(os.getpid()), socket_dir],
                    stdin=subprocess.PIPE,
                    stdout=out_w,
                    stderr=err_w,
                    pass_fds=(out_r, err_r, log_file.fileno()),
                    env=_worker_pythonpath(dict(profile.environ)),
                    cwd=cwd,
                    start_new_session=True,
                    close_fds=True,
                )
                boot = {"address": address, "key": key.hex(), "capture_fds": [out_r, err_r],
                        "log_fd": log_file.fileno(), "secret_keys": list(profile.secret_keys)}
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(boot).encode() + b"\n")
            self.proc.stdin.close()
            self.channel = Channel(self._accept(listener, key))
        except BaseException:
            self._terminate_process()
            self._close_capture_fds()
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
            listener.close()
            try:
                os.unlink(address)
            except OSError:
                pass
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, name=f"mini-magic-worker-{self.id}", daemon=True)
        self._reader.start()

    def _accept(self, listener: socket.socket, key: bytes) -> socket.socket:
        """Accept until our worker authenticates; any other peer is refused and dropped.

        Authentication is what keeps an impostor out; the peer's pid (SO_PEERCRED, where the platform has it) is
        what keeps one from delaying the real worker: a same-user process that connects first and then says nothing
        would hold the handshake for its whole timeout.
        """
        listener.settimeout(0.05)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except (socket.timeout, BlockingIOError):
                if self.proc.poll() is not None:
                    raise WorkerStartError(
                        f"the worker process exited with code {self.proc.returncode} before connecting: "
                        f"{self.log_tail() or 'no output'}"
                    ) from None
                continue
            peer = _peer_pid(conn)
            if peer is not None and peer != self.proc.pid and proctree.parent_of(peer) != self.proc.pid:
                # Not our worker (the keeper's child): refused at once, before it could make the real one wait.
                log.warning("refused a connection on the worker socket from pid %s, which is not this worker", peer)
                conn.close()
                continue
            conn.settimeout(10)
            try:
                authenticate_as_kernel(conn, key)
            except (AuthenticationFailed, OSError) as exc:
                log.warning("refused a connection on the worker socket: %s", exc)
                conn.close()
                continue
            conn.settimeout(None)
            return conn
        raise WorkerStartError(f"the worker did not connect within {START_TIMEOUT:.0f} s: {self.log_tail()}")

    def _read(self) -> None:
        try:
            while True:
                events = decode_events(self.channel.recv_frames())
                self.last_used = time.monotonic()
                self._on_events(self, events)
                # Not kept while waiting for the next message: a Result holds the run's large values, which must go
                # when the notebook drops them.
                del events
        except (ChannelClosed, OSError):
            pass
        except Exception:  # noqa: BLE001 - a reader thread must never die silently
            log.exception("worker %s: reading events failed", self.id)
        self.channel.close()
        try:
            self.returncode = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._terminate_process()
            self.returncode = self.proc.returncode
        leftover = self.drain_output()
        self._close_capture_fds()
        self._on_exit(self, self.returncode, self.log_tail(), leftover)

    def drain_output(self) -> tuple[str, str]:
        """What the dead worker wrote to stdout/stderr that its own reader thread never forwarded."""
        texts = []
        for fd in self._capture_fds:
            chunks = []
            try:
                os.set_blocking(fd, False)
                while chunk := os.read(fd, 65536):
                    chunks.append(chunk)
            except (BlockingIOError, OSError):
                pass
            texts.append(self._scrubber.scrub_bytes(b"".join(chunks)))
        return texts[0], texts[1]

    def _close_capture_fds(self) -> None:
        fds, self._capture_fds = self._capture_fds, ()
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def send(self, frames: list) -> None:
        self.channel.send_frames(frames)

    def interrupt(self) -> None:
        """SIGINT to this worker only (it is in its own session, so nothing else receives it; its keeper forwards
        it to the worker alone)."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """End the worker's whole tree now: the worker and every process a run started, wherever it went. The
        keeper, spared, reaps them and exits with the worker's status (else :meth:`_read` kills it too)."""
        if not self.detached and self.proc.poll() is None:
            proctree.kill_tree(self.proc.pid, include_root=False)

    def detach(self) -> None:
        """Exempt this worker's tree from ending with the kernel or with :meth:`close` (a run the user detached)."""
        self.detached = True
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Stop the worker now (a detached one is only disconnected). Idempotent."""
        self.kill()
        self.channel.close()

    def _terminate_process(self) -> None:
        """End the tree and reap the keeper: the start failed, or the keeper did not exit when the connection ended.
        A keeper that does not exit once its worker is killed is killed too."""
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None and not self.detached:
            proctree.kill_tree(proc.pid, include_root=False)
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proctree.kill_tree(proc.pid)
                proc.wait()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, limit: int = 4000) -> str:
        """The end of the worker's log, from a line start (a cut line could begin with the rest of a secret)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                start = max(0, f.tell() - limit)
                f.seek(start)
                data = f.read()
        except OSError:
            return ""
        if start > 0:
            data = data.partition(b"\n")[2]
        return self._scrubber.scrub_bytes(data).strip()
