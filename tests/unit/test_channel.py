"""Unit tests for mini_magic.channel (mutual HMAC authentication, framing) and for how a local worker process
treats a peer that does not hold its key: it must refuse and exit without running anything."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mini_magic import wire
from mini_magic.options import RunOptions
from mini_magic.backends.local.process import WorkerProcess, WorkerProfile
from mini_magic.backends.local.runtime_dir import private_socket_dir
from mini_magic.channel import (
    AuthenticationFailed,
    Channel,
    ChannelClosed,
    authenticate_as_kernel,
    authenticate_as_worker,
)
from mini_magic.jobs import CellContext, build_job

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
REPO_ROOT = Path(__file__).resolve().parents[2]

# The protocol as channel.py documents it; the hand-written peers below speak it byte by byte.
AUTH_MAGIC = b"MINIMAGIC-AUTH-1"
NONCE = 32


def proof(key: bytes, role: bytes, nonce: bytes) -> bytes:
    return hmac.new(key, role + nonce, hashlib.sha256).digest()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"peer closed after {len(data)} of {n} bytes")
        data += chunk
    return data


class Side(threading.Thread):
    """Run one side of a handshake in a thread; keep its exception (or None)."""

    def __init__(self, target, *args: Any) -> None:
        super().__init__(daemon=True)
        self._target_fn = target
        self._args = args
        self.error: BaseException | None = None
        self.result: Any = None

    def run(self) -> None:
        try:
            self.result = self._target_fn(*self._args)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc

    def outcome(self, timeout: float = 10) -> BaseException | None:
        self.join(timeout)
        assert not self.is_alive(), "a handshake side hung"
        return self.error


def handshake(kernel_key: bytes, worker_key: bytes) -> tuple[BaseException | None, BaseException | None]:
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    try:
        kernel = Side(authenticate_as_kernel, a, kernel_key)
        worker = Side(authenticate_as_worker, b, worker_key)
        kernel.start()
        worker.start()
        return kernel.outcome(), worker.outcome()
    finally:
        a.close()
        b.close()


# -- authentication over a socketpair ------------------------------------------------------------------


def test_right_keys_authenticate_both_sides():
    kernel_error, worker_error = handshake(KEY_A, KEY_A)
    assert kernel_error is None
    assert worker_error is None


def test_wrong_key_is_refused_on_both_sides():
    kernel_error, worker_error = handshake(KEY_A, KEY_B)
    assert isinstance(kernel_error, AuthenticationFailed), kernel_error
    assert isinstance(worker_error, AuthenticationFailed), worker_error


def test_after_authentication_frames_flow_both_ways():
    a, b = socket.socketpair()
    try:
        worker = Side(authenticate_as_worker, b, KEY_A)
        worker.start()
        authenticate_as_kernel(a, KEY_A)
        assert worker.outcome() is None
        Channel(a).send_frames([b"ping"])
        assert Channel(b).recv_frames() == [bytearray(b"ping")]
        Channel(b).send_frames([b"pong", b""])
        assert Channel(a).recv_frames() == [bytearray(b"pong"), bytearray(b"")]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("key", "role"),
    [(KEY_B, b"kernel"), (KEY_A, b"worker")],
    ids=["proof-made-with-another-key", "worker-proof-replayed-with-the-right-key"],
)
def test_worker_refuses_a_kernel_whose_own_proof_is_wrong(key: bytes, role: bytes):
    """The kernel accepts the worker, but its proof is made with another key, or is the worker's own role echoed
    back (roles are bound into the proofs): the worker must refuse."""
    a, b = socket.socketpair()
    a.settimeout(10)
    try:
        worker = Side(authenticate_as_worker, b, KEY_A)
        worker.start()
        nonce = os.urandom(NONCE)
        a.sendall(AUTH_MAGIC + nonce)
        assert recv_exact(a, 32) == proof(KEY_A, b"worker", nonce)
        a.sendall(b"\x01")
        worker_nonce = recv_exact(a, NONCE)
        a.sendall(proof(key, role, worker_nonce))
        assert isinstance(worker.outcome(), AuthenticationFailed)
    finally:
        a.close()
        b.close()


def test_kernel_refuses_a_peer_that_does_not_answer_the_challenge():
    a, b = socket.socketpair()
    a.settimeout(10)
    try:
        kernel = Side(authenticate_as_kernel, a, KEY_A)
        kernel.start()
        recv_exact(b, len(AUTH_MAGIC) + NONCE)
        b.sendall(os.urandom(32))
        assert isinstance(kernel.outcome(), AuthenticationFailed)
        assert recv_exact(b, 1) == b"\x00"
    finally:
        a.close()
        b.close()


def test_worker_refuses_a_peer_that_does_not_speak_the_protocol():
    a, b = socket.socketpair()
    try:
        worker = Side(authenticate_as_worker, b, KEY_A)
        worker.start()
        a.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 48)
        assert isinstance(worker.outcome(), AuthenticationFailed)
    finally:
        a.close()
        b.close()


def test_peer_closing_during_authentication_fails_cleanly():
    a, b = socket.socketpair()
    worker = Side(authenticate_as_worker, b, KEY_A)
    worker.start()
    a.close()
    try:
        assert isinstance(worker.outcome(), AuthenticationFailed)
    finally:
        b.close()


# -- framing ---------------------------------------------------------------------------------------------


def roundtrip(frames: list[Any]) -> list[bytearray]:
    a, b = socket.socketpair()
    try:
        sender = Side(Channel(a).send_frames, frames)  # large frames need a concurrent reader
        sender.start()
        got = Channel(b).recv_frames()
        assert sender.outcome(30) is None
        return got
    finally:
        a.close()
        b.close()


def test_multi_frame_message_round_trips():
    frames = [b"header", b"body" * 100, bytearray(b"\x00\x01\x02"), memoryview(b"view")]
    assert roundtrip(frames) == [bytes(f) for f in frames]


def test_empty_frames_and_empty_message_round_trip():
    assert roundtrip([b"", b"x", b""]) == [b"", b"x", b""]
    assert roundtrip([]) == []
    assert roundtrip([b""]) == [b""]


def test_large_frame_round_trips_intact():
    big = os.urandom(20 * 1024 * 1024)
    got = roundtrip([b"small", big, b"tail"])
    assert [len(f) for f in got] == [5, len(big), 4]
    assert bytes(got[1]) == big
    assert got[2] == b"tail"


def test_a_false_frame_length_forces_no_allocation() -> None:
    """A frame header claiming 6 GiB, then the peer goes away: the reader fails cleanly and its peak memory barely
    moves (it gets memory only for bytes that arrive). Measured in a subprocess: its peak RSS is its own."""
    script = (
        "import socket, struct, sys\n"
        "from mini_magic.channel import Channel, ChannelClosed\n"
        "def peak():\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "a, b = socket.socketpair()\n"
        "before = peak()\n"
        "a.sendall(struct.pack('!I', 2) + struct.pack('!Q', 8) + struct.pack('!Q', 6 << 30) + b'12345678' + b'x' * 1000)\n"
        "a.close()\n"
        "try:\n"
        "    Channel(b).recv_frames()\n"
        "except ChannelClosed as exc:\n"
        "    print('closed', exc)\n"
        "print((peak() - before) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    closed, grown_mib = done.stdout.splitlines()
    assert closed.startswith("closed")
    assert int(grown_mib) < 64, f"reading a false 6 GiB length made the reader's peak memory grow {grown_mib} MiB"


def test_large_first_frame_round_trips():
    big = os.urandom(70_000)  # over the small-message fast path
    assert roundtrip([big, b""]) == [big, b""]


def test_non_byte_buffers_are_sent_as_raw_bytes():
    import array

    values = array.array("i", range(1000))
    (got,) = roundtrip([values])
    assert bytes(got) == values.tobytes()


def test_several_messages_in_a_row_keep_their_boundaries():
    a, b = socket.socketpair()
    try:
        messages = [[b"a"], [b"", b"bb"], [os.urandom(100_000), b"c"], []]
        sender = Side(lambda: [Channel(a).send_frames(m) for m in messages])
        sender.start()
        channel = Channel(b)
        got = [channel.recv_frames() for _ in messages]
        assert sender.outcome(30) is None
        assert got == [[bytes(f) for f in m] for m in messages]
    finally:
        a.close()
        b.close()


def test_closed_peer_raises_channel_closed():
    a, b = socket.socketpair()
    Channel(a).send_frames([b"x" * 10])
    a.shutdown(socket.SHUT_WR)
    channel = Channel(b)
    try:
        assert channel.recv_frames() == [b"x" * 10]
        with pytest.raises(ChannelClosed):
            channel.recv_frames()
    finally:
        a.close()
        b.close()


def test_truncated_message_raises_channel_closed():
    a, b = socket.socketpair()
    a.sendall((1).to_bytes(4, "big") + (100).to_bytes(8, "big") + b"only ten b")
    a.close()
    try:
        with pytest.raises(ChannelClosed):
            Channel(b).recv_frames()
    finally:
        b.close()


def test_concurrent_senders_do_not_interleave_frames():
    a, b = socket.socketpair()
    channel = Channel(a)
    payloads = {i: bytes([i]) * 200_000 for i in range(8)}
    try:
        senders = [Side(channel.send_frames, [bytes([i]), payloads[i]]) for i in payloads]
        for s in senders:
            s.start()
        reader = Channel(b)
        got = [reader.recv_frames() for _ in payloads]
        for s in senders:
            assert s.outcome(30) is None
        for tag, body in got:
            assert body == payloads[tag[0]]
        assert sorted(t[0] for t, _ in got) == sorted(payloads)
    finally:
        a.close()
        b.close()


# -- a real worker process against a fake kernel ---------------------------------------------------------


def proc_running(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return text.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class FakeKernel:
    """A listening Unix socket we own and a real ``python -m mini_magic.worker`` told to connect to it."""

    def __init__(self, tmp: Path, worker_key: bytes) -> None:
        self.tmp = tmp
        sock_dir = tmp / "sock"
        sock_dir.mkdir(mode=0o700)
        self.address = str(sock_dir / "k.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.address)
        self.listener.listen(1)
        self.listener.settimeout(30)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        self.log = open(tmp / "worker.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mini_magic.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            cwd=str(tmp),
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"address": self.address, "key": worker_key.hex()}).encode() + b"\n")
        self.proc.stdin.close()
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(10)

    def wait_exit(self, timeout: float = 10) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_text(self) -> str:
        self.log.flush()
        return (self.tmp / "worker.log").read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()
        self.listener.close()
        self.log.close()


@pytest.fixture
def fake_kernel(tmp_path: Path):
    made: list[FakeKernel] = []

    def start(worker_key: bytes) -> FakeKernel:
        kernel = FakeKernel(tmp_path, worker_key)
        made.append(kernel)
        return kernel

    yield start
    for kernel in made:
        kernel.close()


def marker_job(tmp: Path) -> list[Any]:
    """A real job that creates ``MARKER`` in ``tmp`` when (and only when) the worker runs it."""
    job = build_job("open('MARKER','w').write('x')", {}, RunOptions(backend="local"), CellContext(cwd=str(tmp)))[0]
    return wire.encode_job(job)


def read_events_until_terminal(channel: Channel, timeout: float = 20) -> list[wire.Event]:
    events: list[wire.Event] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = wire.decode_events(channel.recv_frames())
        events.extend(batch)
        if any(e.terminal for e in batch):
            return events
    raise TimeoutError(f"no terminal event; got {events}")


def hand_written_kernel_handshake(conn: socket.socket, kernel_key: bytes, worker_key: bytes) -> None:
    """The kernel side of channel.py's protocol, by hand: check the worker with ``worker_key``, accept it, then
    prove ourselves with ``kernel_key`` (a wrong key when the two differ)."""
    nonce = os.urandom(NONCE)
    conn.sendall(AUTH_MAGIC + nonce)
    assert recv_exact(conn, 32) == proof(worker_key, b"worker", nonce), "the worker's proof is wrong"
    conn.sendall(b"\x01")
    worker_nonce = recv_exact(conn, NONCE)
    conn.sendall(proof(kernel_key, b"kernel", worker_nonce))


def test_real_worker_runs_a_job_for_a_kernel_that_holds_the_key(tmp_path, fake_kernel):
    """Control for the refusal tests below: the same hand-written handshake and job do run with the right key."""
    kernel = fake_kernel(KEY_A)
    hand_written_kernel_handshake(kernel.conn, KEY_A, KEY_A)
    channel = Channel(kernel.conn)
    channel.send_frames(marker_job(tmp_path))
    events = read_events_until_terminal(channel)
    assert isinstance(events[-1], wire.Result), events
    assert (tmp_path / "MARKER").read_text() == "x"
    channel.send_frames([wire.control("shutdown")])
    assert kernel.wait_exit() == 0


def test_real_worker_with_another_key_is_refused_by_the_kernel(tmp_path, fake_kernel):
    kernel = fake_kernel(KEY_A)
    with pytest.raises(AuthenticationFailed):
        authenticate_as_kernel(kernel.conn, KEY_B)
    code = kernel.wait_exit()
    assert code is not None, "the refused worker did not exit"
    assert code != 0
    assert "AuthenticationFailed" in kernel.log_text()


def test_real_worker_refuses_a_kernel_with_a_wrong_proof_and_runs_nothing(tmp_path, fake_kernel):
    kernel = fake_kernel(KEY_A)
    hand_written_kernel_handshake(kernel.conn, KEY_B, KEY_A)  # we accept the worker, then prove with KEY_B
    try:
        Channel(kernel.conn).send_frames(marker_job(tmp_path))  # a real job anyway
    except OSError:
        pass  # the worker may already have hung up
    code = kernel.wait_exit()
    assert code is not None, "the worker kept running after the kernel failed to authenticate"
    assert code != 0
    time.sleep(0.2)
    assert not (tmp_path / "MARKER").exists(), "the worker ran a job from an unauthenticated kernel"
    assert "AuthenticationFailed" in kernel.log_text()


def test_real_worker_refuses_a_peer_that_skips_authentication(tmp_path, fake_kernel):
    """A peer that sends a job straight away (no challenge) never gets it run."""
    kernel = fake_kernel(KEY_A)
    try:
        Channel(kernel.conn).send_frames(marker_job(tmp_path))
    except OSError:
        pass
    code = kernel.wait_exit()
    assert code is not None and code != 0
    assert not (tmp_path / "MARKER").exists()


# -- the socket directory and the socket itself ----------------------------------------------------------


def test_private_socket_dir_is_owner_only(tmp_path):
    path = private_socket_dir()
    try:
        st = os.stat(path)
        assert stat.S_ISDIR(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert st.st_uid == os.getuid()
    finally:
        shutil.rmtree(path)


class ProbedWorker(WorkerProcess):
    """Records the socket's mode at the moment the kernel waits for the worker to connect."""

    socket_mode: int | None = None
    socket_path: str | None = None

    def _accept(self, listener: socket.socket, key: bytes) -> socket.socket:
        self.socket_path = listener.getsockname()
        self.socket_mode = os.stat(self.socket_path).st_mode
        return super()._accept(listener, key)


def test_worker_socket_is_0600_while_spawning_and_removed_after(tmp_path):
    socket_dir = private_socket_dir()
    exits: list[int | None] = []
    worker = ProbedWorker(
        WorkerProfile.from_env(dict(os.environ)),
        socket_dir=socket_dir,
        cwd=str(tmp_path),
        on_events=lambda w, events: None,
        on_exit=lambda w, code, tail, leftover: exits.append(code),
    )
    try:
        assert worker.socket_mode is not None
        assert stat.S_ISSOCK(worker.socket_mode)
        assert stat.S_IMODE(worker.socket_mode) == 0o600
        assert os.path.dirname(worker.socket_path) == socket_dir
        assert not os.path.exists(worker.socket_path), "the listening socket outlives the spawn"
        assert not [n for n in os.listdir(socket_dir) if n.endswith(".sock")]
        assert stat.S_IMODE(os.stat(socket_dir).st_mode) == 0o700
        # The worker lives in its own session (a kernel interrupt to the kernel's group cannot reach it).
        assert worker.alive
        assert os.getsid(worker.pid) == worker.pid
        assert os.getsid(worker.pid) != os.getsid(0)
    finally:
        worker.close()
        deadline = time.monotonic() + 10
        while not exits and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(socket_dir, ignore_errors=True)
    assert exits, "on_exit was not called after close()"
    assert not proc_running(worker.pid)


# -- large frames in shared memory -------------------------------------------------------------------------

MIB = 1 << 20


def memfd_descriptors() -> int:
    return sum("memfd:mini_magic" in os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}"))


def mapping_of(buffer: Any) -> str:
    """The /proc/self/maps line of the mapping that holds ``buffer``'s first byte."""
    import ctypes

    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    for line in Path("/proc/self/maps").read_text().splitlines():
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if start <= address < end:
            return line
    raise AssertionError("no mapping holds the buffer")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memory files and SCM_RIGHTS are Linux's")
def test_a_large_frame_arrives_as_a_private_mapping_of_shared_memory_and_no_descriptor_stays_open(monkeypatch):
    monkeypatch.delenv("MINI_MAGIC_SHARED_MEMORY", raising=False)
    before = memfd_descriptors()
    big = os.urandom(3 * MIB)
    small, got, tail = roundtrip([b"small", big, b"tail"])
    assert (bytes(small), bytes(got), bytes(tail)) == (b"small", big, b"tail")
    assert "memfd:mini_magic" in mapping_of(got)
    got[:4] = b"mine"  # writable, copy-on-write: the receiver's arrays are ordinary writable arrays
    assert bytes(got[:4]) == b"mine"
    if sys.version_info >= (3, 13):
        assert memfd_descriptors() == before, "a memory file descriptor was left open"
    got.close()  # before 3.13 the mapping holds a duplicate of the descriptor: closing it closes that too
    assert memfd_descriptors() == before, "a memory file descriptor was left open"


def test_with_few_descriptors_left_a_large_frame_is_copied_out_and_holds_none(monkeypatch):
    from mini_magic import shared_frames

    monkeypatch.delenv("MINI_MAGIC_SHARED_MEMORY", raising=False)
    monkeypatch.setattr(shared_frames, "_descriptors_to_spare", lambda: False)
    monkeypatch.setattr(shared_frames, "_UNTRACKED_MAPPINGS", False)
    before = memfd_descriptors()
    big = os.urandom(3 * MIB)
    (got,) = roundtrip([big])
    assert bytes(got) == big
    assert "memfd" not in mapping_of(got)
    assert memfd_descriptors() == before


def test_below_the_threshold_or_when_turned_off_frames_go_through_the_socket(monkeypatch):
    (medium,) = roundtrip([os.urandom(MIB - 1)])
    assert isinstance(medium, bytearray)
    monkeypatch.setenv("MINI_MAGIC_SHARED_MEMORY", "0")
    big = os.urandom(3 * MIB)
    (got,) = roundtrip([big])
    assert bytes(got) == big
    assert "memfd" not in mapping_of(got)


@pytest.mark.skipif(not hasattr(socket, "send_fds"), reason="descriptor passing")
def test_a_shared_frame_whose_file_could_still_shrink_is_refused():
    """An unsealed file could be truncated after the receiver mapped it: reading the mapping would then kill the
    receiver with SIGBUS. The receiver refuses it and closes the descriptor."""
    import struct

    a, b = socket.socketpair()
    fd = os.memfd_create("mini_magic")
    os.write(fd, b"x" * (2 * MIB))
    try:
        a.sendall(struct.pack("!I", 1) + struct.pack("!Q", (2 * MIB) | (1 << 63)))
        socket.send_fds(a, [b"\0"], [fd])
        before = memfd_descriptors()
        with pytest.raises(ChannelClosed, match="could not be mapped"):
            Channel(b).recv_frames()
        assert memfd_descriptors() == before
    finally:
        os.close(fd)
        a.close()
        b.close()


def test_a_shared_frame_without_its_descriptor_fails_cleanly():
    import struct

    a, b = socket.socketpair()
    a.sendall(struct.pack("!I", 1) + struct.pack("!Q", (2 * MIB) | (1 << 63)) + b"\0")
    try:
        with pytest.raises(ChannelClosed, match="without its memory file"):
            Channel(b).recv_frames()
    finally:
        a.close()
        b.close()
