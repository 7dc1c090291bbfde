"""Run the fake control plane (gRPC + blob HTTP server) on loopback in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpclib.server
from aiohttp import web
from grpclib.events import RecvRequest, listen

from .blobs import make_blob_app
from .servicer import ContainerRecord, FakeServicer, FakeState

CLIENT_ENV_KEYS = ("MODAL_SERVER_URL", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_CONFIG_PATH",
                   "MODAL_ENVIRONMENT", "MODAL_PROFILE")


class FakeModal:
    """Handle on a running fake.  `url` is what `MODAL_SERVER_URL` must point at."""

    def __init__(self, **state_options):
        self._tmp = Path(tempfile.mkdtemp(prefix="fake-modal-"))
        self.state = FakeState(workdir=self._tmp / "containers", **state_options)
        self.url = ""
        self.blob_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # ------------------------------------------------------------ observation helpers
    @property
    def calls(self) -> list[str]:
        return self.state.calls

    @property
    def containers(self) -> dict[str, ContainerRecord]:
        return self.state.containers

    @property
    def errors(self) -> list[str]:
        return self.state.errors

    def requests(self, name: str) -> list:
        return [req for n, req in list(self.state.requests) if n == name]

    def mark(self) -> int:
        """Position in `calls`, to look only at what came after (`calls_since`)."""
        return len(self.state.calls)

    def calls_since(self, mark: int) -> list[str]:
        return self.state.calls[mark:]

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(interval)

    def client_env(self) -> dict[str, str]:
        return {
            "MODAL_SERVER_URL": self.url,
            "MODAL_TOKEN_ID": "ak-fake-modal",
            "MODAL_TOKEN_SECRET": "as-fake-modal",
            # keep the user's ~/.modal.toml (real tokens, profiles) out of the picture
            "MODAL_CONFIG_PATH": str(self._tmp / "modal.toml"),
        }

    def run_coro(self, coro, timeout: float = 30.0):
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def add_secret(self, name: str, env: dict[str, str]) -> str:
        async def _add():
            sid = self.state.new_id("st")
            self.state.secrets[sid] = dict(name=name, env=dict(env))
            self.state.named_secrets[("main", name)] = sid
            return sid

        return self.run_coro(_add())

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 15.0) -> "FakeModal":
        self._thread = threading.Thread(target=self._thread_main, name="fake-modal", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("fake Modal control plane did not start")
        if self._startup_error:
            raise RuntimeError("fake Modal control plane failed to start") from self._startup_error
        return self

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self.state.notify()
        runner = None
        server = None
        try:
            runner = web.AppRunner(make_blob_app(self.state.blobs))
            await runner.setup()
            bsock = _loopback_socket()
            await web.SockSite(runner, bsock).start()
            self.blob_url = f"http://127.0.0.1:{bsock.getsockname()[1]}"
            self.state.blob_base_url = self.blob_url

            server = grpclib.server.Server([FakeServicer(self.state, None)])
            listen(server, RecvRequest, self.state.rpc_listener(None))
            gsock = _loopback_socket()
            await server.start(sock=gsock)
            self.url = f"http://127.0.0.1:{gsock.getsockname()[1]}"
        except BaseException as exc:  # pragma: no cover
            self._startup_error = exc
            self._ready.set()
            raise
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.state.shutdown()
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
            await runner.cleanup()

    def stop(self, timeout: float = 20.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "FakeModal":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def modal_client_env(fake: FakeModal) -> Iterator[None]:
    """Point the real `modal` client at the fake for the duration of the block (process-wide env)."""
    saved = {k: os.environ.get(k) for k in CLIENT_ENV_KEYS}
    for k in CLIENT_ENV_KEYS:
        os.environ.pop(k, None)
    os.environ.update(fake.client_env())
    _reset_modal_client()
    try:
        yield
    finally:
        _reset_modal_client()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _reset_modal_client() -> None:
    """Drop modal's cached env client so the next call builds one from the current env.

    `modal.config.Config.get` reads `MODAL_*` env vars on every call, so only the cached client matters.
    """
    import modal.client

    modal.client._Client._client_from_env = None
