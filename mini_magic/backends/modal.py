"""The Modal backend: ``%%thither --backend modal --gpu L4`` runs the cell in a Modal container.

The only module that imports ``modal`` (lazily: the package works without it). One ephemeral App per kernel and
image, started at the first run that needs it, with ONE generic runner function (``mini_magic.worker.modal.run_job``);
per-cell resources go through ``Function.with_options``, so a new GPU type needs no new App. A run is
``spawn`` + events drained from one partition of an ephemeral ``modal.Queue`` + the terminal event from
``FunctionCall.get``; cancel (interrupt, timeout, Cancel) is ``FunctionCall.cancel(terminate_containers=True)``.
``with app.run()`` is never used around a run: it swallows KeyboardInterrupt.
"""

from __future__ import annotations

import os
import pickle
import queue
import sys
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import cloudpickle

from .. import wire
from ..errors import ThitherUsageError
from .local.resources import local_secret
from ..worker import modal as container_entry
from ..options import DEFAULT_TIMEOUT, RunOptions
from .base import Backend, QueuedRunHandle, volume_variable

if TYPE_CHECKING:
    from .._ipykernel import ArgumentGroup

MAX_TIMEOUT = int(DEFAULT_TIMEOUT)  # Modal's limit on a function's timeout, in whole seconds: 24 h
PREFLIGHT_SECONDS = 5.0
_GET_MANY = 1000


def _modal() -> Any:
    try:
        import modal
    except ImportError:
        raise ThitherUsageError(
            "--backend modal needs the Modal client: pip install 'mini_magic[modal]', then `modal token new`."
        ) from None
    return modal


MAP_CALLS_IN_FLIGHT = 32


class ModalRun(QueuedRunHandle):
    """Events from the run's queue partition, then the terminal event from the function call's return value."""

    def __init__(self, call: Any, events_queue: Any, partition: str, run_id: str, remote_id: str | None = None
                 ) -> None:
        """``events_queue`` None: only the result is awaited (reattaching to a detached run)."""
        super().__init__()
        self.run_id = run_id
        self.remote_id = remote_id or call.object_id
        self._call = call
        self._queue = events_queue
        self._partition = partition
        self._terminal: wire.Event | None = None
        self._result_ready = threading.Event()
        self.cancel_requested = False
        self.queue_operations = 0
        threading.Thread(target=self._await_result, name=f"mini-magic-modal-result-{run_id}", daemon=True).start()
        threading.Thread(target=self._pump, name=f"mini-magic-modal-events-{run_id}", daemon=True).start()

    def _await_result(self) -> None:
        try:
            self._terminal = pickle.loads(self._call.get())
        except BaseException as exc:  # noqa: BLE001 - every ending becomes a terminal event
            if self.cancel_requested:
                self._terminal = wire.Cancelled(seq=0, reason="cancelled; the Modal container was stopped")
            else:
                self._terminal = wire.WorkerExited(seq=0, returncode=None,
                                                   log_tail=f"the Modal function call failed: {type(exc).__name__}: {exc}")
        self._result_ready.set()

    def _pump(self) -> None:
        """Until the runner's end-of-run marker (or, if the container died without one, the call's end)."""
        if self._queue is None:
            self._result_ready.wait()
            assert self._terminal is not None
            self.put(self._terminal)
            return
        decoder = container_entry.ItemDecoder()
        while True:
            if decoder.ended:
                self._result_ready.wait()
                assert self._terminal is not None
                self.put(self._terminal)
                return
            finishing = self._result_ready.is_set()
            try:
                items = self._queue.get_many(_GET_MANY, block=not finishing, timeout=None if finishing else 1.0,
                                             partition=self._partition)
            except queue.Empty:
                items = []
            except Exception as exc:  # noqa: BLE001 - the queue went away (app stopped); finish with what we have
                self.put(wire.Stderr(seq=0, text=f"mini_magic: reading run events failed: {exc}\n"))
                items, finishing = [], True
                self._result_ready.wait()
            self.queue_operations += 1
            for item in items:
                for event in decoder.feed(item):
                    self.put(event)
            if finishing and not items:
                assert self._terminal is not None
                self.put(self._terminal)
                return

    def cancel(self) -> None:
        self.cancel_requested = True
        threading.Thread(target=self._cancel, daemon=True).start()

    def kill(self) -> None:
        self.cancel()

    def _cancel(self) -> None:
        try:
            self._call.cancel(terminate_containers=True)
        except Exception:  # noqa: BLE001 - the result thread reports how the call ended
            pass


def bind_resources(modal: Any, function: Any, options: RunOptions) -> tuple[Any, list[Any]]:
    """The runner with this cell's resources (``Function.with_options``), and the volumes to commit after it."""
    volumes = {path: modal.Volume.from_name(name, create_if_missing=True) for name, path in options.volumes}
    env = {**options.env, **{volume_variable(name): path for name, path in options.volumes}}
    bound = function.with_options(
        gpu=options.gpu or None,
        cpu=options.extra.get("cpu"),
        memory=options.extra.get("memory"),
        timeout=int(options.timeout) if options.timeout else MAX_TIMEOUT,
        env=env or None,
        secrets=[modal.Secret.from_name(name) for name in options.secrets],
        volumes=volumes,
    )
    return bound, list(volumes.values())


def _modal_secret_keys(modal: Any, name: str) -> list[str]:
    """The keys (never the values) of Modal secret ``name``: looking it up hydrates it with its metadata. modal 1.6
    keeps the keys behind ``Secret._get_keys`` (no RPC once hydrated; what Modal's own CLI uses), the one private
    call here: re-check it when the pinned client changes."""
    secret = modal.Secret.from_name(name)
    try:
        secret.hydrate()
    except modal.exception.NotFoundError as exc:
        raise ThitherUsageError(f"--secret {name}: Modal has no secret named {name!r} ({exc}). Create it with "
                                f"`modal secret create {name} KEY=VALUE` or at https://modal.com/secrets.") from None
    return sorted(secret._get_keys())


class _AppSession:
    """One running App with its runner function, for one image."""

    def __init__(self, modal: Any, image: Any, label: str, detach: bool) -> None:
        self.app = modal.App(label)
        self.runner = self.app.function(image=image, timeout=MAX_TIMEOUT, name="mini_magic_runner")(
            container_entry.run_job
        )
        # A detached App keeps running when this kernel goes away, so its runs can be reattached.
        self._run = self.app.run(detach=detach)
        self._run.__enter__()

    def close(self) -> None:
        self._run.__exit__(None, None, None)


class ModalBackend(Backend):
    name = "modal"
    description = "Modal containers; needs pip install 'mini_magic[modal]' and a Modal token"
    hither_interval: ClassVar[float] = 0.25

    def __init__(self, namespace: dict[str, Any] | None = None) -> None:
        self.namespace = namespace if namespace is not None else {}
        self._lock = threading.Lock()
        self._apps: dict[tuple, _AppSession] = {}
        self._queue_context: Any = None
        self._queue: Any = None
        self._checked = False

    @classmethod
    def from_config(cls, config: Any, shell: Any = None) -> ModalBackend:
        return cls(getattr(shell, "user_ns", None))

    @classmethod
    def add_arguments(cls, group: ArgumentGroup) -> None:
        group.add_argument("--cpu", type=float, metavar="CORES", help="CPU cores to reserve (Modal).")
        group.add_argument("--memory", type=int, metavar="MiB", help="memory to reserve, in MiB (Modal).")
        group.add_argument("--pip", action="append", metavar="PKG", help="add a pip requirement to the image, "
                           "e.g. --pip torch==2.5.1 (repeatable; Modal).")
        group.add_argument("--image", metavar="NAME", help="a modal.Image defined in the notebook to run in "
                           "(Modal; mini_magic and cloudpickle are added to it).")
        group.add_argument("--detach", action="store_true", help="with --bg: run in a detached Modal App that survives "
                           "the kernel; after a restart, `%%thither attach RUN_ID` returns its result (its live "
                           "output is not replayed). Modal only.")

    def prepare(self, options: RunOptions) -> None:
        modal = _modal()
        self._preflight(modal)
        if options.timeout and options.timeout > MAX_TIMEOUT:
            raise ThitherUsageError(f"--timeout: Modal allows at most {MAX_TIMEOUT} s (24 h).")
        self._image_for(modal, options)

    def _preflight(self, modal: Any) -> None:
        """A clear message within seconds instead of the client's minute of retries."""
        if self._checked:
            return
        if not (os.environ.get("MODAL_TOKEN_ID") or modal.config.config.get("token_id")):
            raise ThitherUsageError(
                "--backend modal: no Modal token is configured. Run `modal token new` in a terminal (or set "
                "MODAL_TOKEN_ID and MODAL_TOKEN_SECRET), then run the cell again."
            )
        outcome: dict[str, BaseException] = {}

        def hello() -> None:
            try:
                modal.Client.from_env()
            except BaseException as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc

        thread = threading.Thread(target=hello, daemon=True)
        thread.start()
        thread.join(PREFLIGHT_SECONDS)
        server = modal.config.config.get("server_url")
        if thread.is_alive():
            raise ThitherUsageError(f"--backend modal: Modal ({server}) did not answer within {PREFLIGHT_SECONDS:.0f} s; "
                                    "check the network connection and try again.")
        if "error" in outcome:
            error = outcome["error"]
            raise ThitherUsageError(f"--backend modal: connecting to Modal ({server}) failed: "
                                    f"{type(error).__name__}: {error}. Check your token (`modal token new`).")
        self._checked = True

    def _image_for(self, modal: Any, options: RunOptions) -> tuple[tuple, Any]:
        name = options.extra.get("image")
        pips = tuple(options.extra.get("pip") or ())
        if name:
            image = self.namespace.get(name)
            if not isinstance(image, modal.Image):
                raise ThitherUsageError(f"--image {name}: no modal.Image named {name!r} in the notebook "
                                        f"(got {type(image).__name__}); define it first, e.g. "
                                        f"{name} = modal.Image.debian_slim().pip_install('torch').")
        else:
            image = modal.Image.debian_slim(python_version="%d.%d" % sys.version_info[:2])
        image = image.pip_install(f"cloudpickle=={cloudpickle.__version__}", *pips)
        image = image.add_local_python_source("mini_magic")
        return (name, id(self.namespace.get(name)) if name else None, pips), image

    def _session(self, modal: Any, options: RunOptions) -> _AppSession:
        key, image = self._image_for(modal, options)
        detach = bool(options.extra.get("detach"))
        key = (*key, detach)
        with self._lock:
            if self._queue is None:
                self._queue_context = modal.Queue.ephemeral()
                self._queue = self._queue_context.__enter__()
            if key not in self._apps:
                label = f"mini-magic-{os.getpid()}-{len(self._apps)}" + ("-detached" if detach else "")
                self._apps[key] = _AppSession(modal, image, label, detach)
            return self._apps[key]

    def submit(self, job: wire.Job, options: RunOptions) -> ModalRun:
        modal = _modal()
        session = self._session(modal, options)
        bound, volumes = bind_resources(modal, session.runner, options)
        run_id = job.header.run_id
        frames = [bytes(f) for f in wire.encode_job(job)]
        call = bound.spawn(frames, self._queue, run_id, volumes)
        return ModalRun(call, self._queue, run_id, run_id)

    def fan_out(self, options: RunOptions) -> int:
        """Spawned calls in flight for one ``.map``: Modal scales containers out to serve them (each call here costs
        two threads that follow its events and result)."""
        return MAP_CALLS_IN_FLIGHT

    def attach(self, remote_id: str, run_id: str) -> ModalRun:
        """Follow a detached run started by an earlier kernel: only its result (live events are gone)."""
        modal = _modal()
        self._preflight(modal)
        return ModalRun(modal.FunctionCall.from_id(remote_id), None, run_id, run_id, remote_id)

    def secret_keys(self, options: RunOptions, cwd: str) -> tuple[str, ...]:
        """The keys of every ``--secret``, for the container: their values exist only in its environment, so it
        scrubs them there from everything it sends and logs. Keys of a local mirror of the secret (``.env.NAME``
        or ``MINI_MAGIC_SECRET_<NAME>_*``) are added, in case the mirror knows more."""
        modal = _modal()
        keys: list[str] = []
        for name in options.secrets:
            keys.extend(_modal_secret_keys(modal, name))
            try:
                keys.extend(local_secret(name, cwd))
            except ThitherUsageError:
                pass
        return tuple(dict.fromkeys(keys))

    def close(self) -> None:
        with self._lock:
            apps, self._apps = list(self._apps.values()), {}
            queue_context, self._queue_context, self._queue = self._queue_context, None, None
        for session in apps:
            try:
                session.close()
            except Exception:  # noqa: BLE001 - closing goes on
                pass
        if queue_context is not None:
            try:
                queue_context.__exit__(None, None, None)
            except Exception:  # noqa: BLE001
                pass
