"""An offline stand-in for Modal's control plane (modal==1.6.4).

`FakeState` holds everything in plain dicts and lists; `FakeServicer` is the grpclib handler class
(a subclass of the generated `modal_proto.api_grpc.ModalClientBase`).  One servicer instance serves
the local client; every container gets its own servicer instance (and its own loopback port) bound to
its task id, because the container client sends no header that names its task.

Everything here runs on the fake's own event loop (see `server.py`); tests read the state from their
own thread, so it only ever appends to lists or replaces dict entries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import signal
import socket
import sys
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

import grpclib.server
from google.protobuf.message import Message
from grpclib import GRPCError, Status
from grpclib.exceptions import StreamTerminatedError
from h2.exceptions import StreamClosedError
from grpclib.events import RecvRequest, listen
from modal_proto import api_grpc, api_pb2

GENERIC = api_pb2.GenericResult
EPHEMERAL = api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL
CREATE_IF_MISSING = api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING
CREATE_FAIL_IF_EXISTS = api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS
ANONYMOUS_OWNED_BY_APP = api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP

# Reply type of every RPC, read from the generated handler table.
class _AnyAttr:
    def __getattr__(self, name):
        return None


_HANDLERS = api_grpc.ModalClientBase.__mapping__(_AnyAttr())
REPLY_TYPES: dict[str, type] = {path.rsplit("/", 1)[1]: h.reply_type for path, h in _HANDLERS.items()}
ALL_RPCS = sorted(REPLY_TYPES)

# The container must not see the project or its tests: drop these from its sys.path.
_PROJECT_ROOT = Path(__file__).resolve().parents[3]

_BOOTSTRAP = r"""
import os, runpy, sys
_drop = {os.path.realpath(p) for p in os.environ.pop("FAKE_MODAL_SYS_PATH_EXCLUDE", "").split(os.pathsep) if p}
_extra = [p for p in os.environ.pop("FAKE_MODAL_SYS_PATH_EXTRA", "").split(os.pathsep) if p]
sys.path[:] = [os.getcwd()] + _extra + [p for p in sys.path if p and os.path.realpath(p) not in _drop]
runpy.run_module("modal._container_entrypoint", run_name="__main__", alter_sys=True)
"""


def copy_common_fields(src: Message, dst: Message, skip: tuple[str, ...] = ()) -> Message:
    """Copy every set field of `src` into the same-named, same-typed field of `dst`."""
    dst_fields = dst.DESCRIPTOR.fields_by_name
    for field, value in src.ListFields():
        other = dst_fields.get(field.name)
        if other is None or field.name in skip or other.type != field.type:
            continue
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map:
            if other.message_type is None or not other.message_type.GetOptions().map_entry:
                continue
            vf, ovf = field.message_type.fields_by_name["value"], other.message_type.fields_by_name["value"]
            if vf.type != ovf.type or (vf.message_type and vf.message_type.full_name != ovf.message_type.full_name):
                continue
        elif field.message_type is not None and (
            other.message_type is None or other.message_type.full_name != field.message_type.full_name
        ):
            continue
        if is_map:
            target = getattr(dst, field.name)
            target.clear()
            for k, v in value.items():
                if field.message_type.fields_by_name["value"].message_type is None:
                    target[k] = v
                else:
                    target[k].CopyFrom(v)
        elif field.is_repeated:
            if not other.is_repeated:
                continue
            target = getattr(dst, field.name)
            del target[:]
            target.extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)
    return dst


@dataclasses.dataclass
class InputRecord:
    input_id: str
    function_call_id: str
    function_id: str
    idx: int
    input: api_pb2.FunctionInput
    invocation_type: int
    status: str = "pending"  # pending | running | done
    task_id: str | None = None
    started_at: float | None = None
    output: api_pb2.FunctionGetOutputsItem | None = None
    output_seq: int = 0
    cleared: bool = False


@dataclasses.dataclass
class FunctionCallRecord:
    function_call_id: str
    function_id: str
    call_type: int
    invocation_type: int
    input_ids: list[str] = dataclasses.field(default_factory=list)
    num_inputs: int | None = None  # set by FunctionFinishInputs (map)
    cancelled: bool = False
    terminate_containers: bool = False
    next_output_seq: int = 0
    data_out: list[api_pb2.DataChunk] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ContainerRecord:
    task_id: str
    function_id: str
    app_id: str
    url: str
    workdir: Path
    args: api_pb2.ContainerArguments
    pid: int | None = None
    started_at: float = dataclasses.field(default_factory=time.time)
    ended_at: float | None = None
    returncode: int | None = None
    hello: bool = False
    current_inputs: set = dataclasses.field(default_factory=set)
    served_inputs: list = dataclasses.field(default_factory=list)
    cancel_pending: list = dataclasses.field(default_factory=list)
    kill_switch: bool = False
    terminated_by: str | None = None
    task_result: api_pb2.GenericResult | None = None
    last_active: float = dataclasses.field(default_factory=time.monotonic)
    stdout_lines: list = dataclasses.field(default_factory=list)
    stderr_lines: list = dataclasses.field(default_factory=list)
    env: dict = dataclasses.field(default_factory=dict)
    # private
    _process: Any = None
    _server: Any = None

    @property
    def alive(self) -> bool:
        return self.returncode is None

    @property
    def stdout(self) -> str:
        return "".join(self.stdout_lines)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def __repr__(self) -> str:
        return (
            f"ContainerRecord({self.task_id}, fn={self.function_id}, pid={self.pid}, alive={self.alive}, "
            f"rc={self.returncode}, terminated_by={self.terminated_by!r}, served={self.served_inputs})"
        )


class FakeState:
    def __init__(
        self,
        *,
        workdir: Path,
        python: str = sys.executable,
        sys_path_exclude: list[str] | None = None,
        get_inputs_hold_s: float = 5.0,
        heartbeat_hold_s: float = 10.0,
        heartbeat_interval_s: float = 15.0,
        idle_timeout_s: float = 60.0,
        kill_grace_s: float = 2.0,
        max_containers_per_function: int = 4,
        container_env: dict[str, str] | None = None,
        container_packages: list[str] | None = None,
    ):
        self.workdir = workdir
        self.python = python
        self.sys_path_exclude = (
            sys_path_exclude if sys_path_exclude is not None else [str(_PROJECT_ROOT), str(_PROJECT_ROOT / "tests")]
        )
        self.get_inputs_hold_s = get_inputs_hold_s
        self.heartbeat_hold_s = heartbeat_hold_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.idle_timeout_s = idle_timeout_s
        self.kill_grace_s = kill_grace_s
        self.max_containers_per_function = max_containers_per_function
        self.container_env = dict(container_env or {})
        # Local packages (directories) the containers may import although their parent dir is excluded,
        # e.g. the project's own package: they are symlinked into one directory put on the container sys.path.
        self.container_packages = list(container_packages or [])
        self.blob_base_url = ""  # set by the server once the HTTP side server is up

        # --- observable records ---
        self.calls: list[str] = []  # every RPC name received, client and containers, in order
        self.call_log: list[tuple[float, str, str | None]] = []  # (time, rpc, task_id or None)
        self.requests: list[tuple[str, Message]] = []  # (rpc, request) for the RPCs this fake implements
        self.errors: list[str] = []  # tracebacks of handler crashes
        self.unimplemented: list[str] = []  # RPCs received that this fake does not implement
        self.cancellations: list[api_pb2.FunctionCallCancelRequest] = []

        # --- state ---
        self.apps: dict[str, dict] = {}
        self.deployed_apps: dict[tuple[str, str], str] = {}
        self.functions: dict[str, dict] = {}
        self.function_calls: dict[str, FunctionCallRecord] = {}
        self.inputs: dict[str, InputRecord] = {}
        self.pending: dict[str, deque] = {}
        self.containers: dict[str, ContainerRecord] = {}
        self.images: dict[str, api_pb2.Image] = {}
        self.mounts: dict[str, Message] = {}
        self.mount_files: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self.queues: dict[str, dict] = {}
        self.named_queues: dict[tuple[str, str], str] = {}
        self.secrets: dict[str, dict] = {}
        self.named_secrets: dict[tuple[str, str], str] = {}
        self.volumes: dict[str, dict] = {}
        self.named_volumes: dict[tuple[str, str], str] = {}
        self.bound_functions: dict[bytes, str] = {}
        self.logs: list[tuple[str, api_pb2.TaskLogs]] = []  # (app_id, log item)

        self._counters: dict[str, int] = {}
        self._changed: asyncio.Event | None = None
        self._bg_tasks: set = set()

    # ---------------------------------------------------------------- helpers
    def new_id(self, prefix: str) -> str:
        n = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = n
        return f"{prefix}-{n}"

    def notify(self) -> None:
        """Wake every long poll (state changed)."""
        if self._changed is not None:
            self._changed.set()
        self._changed = asyncio.Event()

    async def wait_change(self, timeout: float) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        if timeout <= 0:
            return
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def spawn_bg(self, coro) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self._bg_tasks.add(t)
        t.add_done_callback(self._bg_tasks.discard)
        return t

    def rpc_listener(self, task_id: str | None):
        """grpclib `RecvRequest` listener: record every RPC name, implemented or not."""

        async def on_request(event: RecvRequest) -> None:
            name = event.method_name.rsplit("/", 1)[1]
            self.calls.append(name)
            self.call_log.append((time.time(), name, task_id))

        return on_request

    def function_def(self, function_id: str) -> api_pb2.Function:
        return self.functions[function_id]["definition"]

    def handle_metadata(self, function_id: str) -> api_pb2.FunctionHandleMetadata:
        fn = self.functions[function_id]
        d: api_pb2.Function = fn["definition"]
        meta = api_pb2.FunctionHandleMetadata(definition_id=fn["definition_id"], app_id=fn["app_id"])
        for name in ("function_name", "function_type", "web_url", "is_method", "use_method_name",
                     "function_schema", "supported_input_formats", "supported_output_formats",
                     "class_parameter_info"):
            if name in d.DESCRIPTOR.fields_by_name and name in meta.DESCRIPTOR.fields_by_name:
                value = getattr(d, name)
                if isinstance(value, Message):
                    if d.HasField(name):
                        getattr(meta, name).CopyFrom(value)
                elif d.DESCRIPTOR.fields_by_name[name].is_repeated:
                    getattr(meta, name).extend(value)
                else:
                    setattr(meta, name, value)
        if fn.get("base_function_id"):
            meta.base_function_id = fn["base_function_id"]
        for name, md in d.method_definitions.items():
            meta.method_handle_metadata[name].CopyFrom(
                api_pb2.FunctionHandleMetadata(
                    function_name=md.function_name,
                    function_type=md.function_type,
                    is_method=True,
                    use_method_name=name,
                    function_schema=md.function_schema,
                    supported_input_formats=md.supported_input_formats,
                    supported_output_formats=md.supported_output_formats,
                    app_id=fn["app_id"],
                )
            )
        return meta

    def function_data(self, function_id: str) -> api_pb2.FunctionData:
        """1.6.x clients build `Function.info()` from `function_data.ranked_functions`."""
        fn = self.functions[function_id]
        if fn.get("function_data") is not None and not fn.get("base_function_id"):
            return fn["function_data"]
        d: api_pb2.Function = fn["definition"]
        data = copy_common_fields(d, api_pb2.FunctionData(), skip=("ranked_functions",))
        data.ranked_functions.append(api_pb2.FunctionData.RankedFunction(rank=0, function=d))
        return data

    def app_layout(self, app_id: str) -> api_pb2.AppLayout:
        layout = api_pb2.AppLayout()
        app = self.apps.get(app_id, {})
        for fid, fn in self.functions.items():
            if fn["app_id"] != app_id:
                continue
            layout.objects.append(api_pb2.Object(object_id=fid, function_handle_metadata=self.handle_metadata(fid)))
        for tag, fid in app.get("function_ids", {}).items():
            layout.function_ids[tag] = fid
        for tag, cid in app.get("class_ids", {}).items():
            layout.class_ids[tag] = cid
        return layout

    # ---------------------------------------------------------------- inputs / outputs
    def add_input(self, fc: FunctionCallRecord, item: api_pb2.FunctionPutInputsItem) -> InputRecord:
        inp = InputRecord(
            input_id=self.new_id("in"),
            function_call_id=fc.function_call_id,
            function_id=fc.function_id,
            idx=item.idx,
            input=item.input,
            invocation_type=fc.invocation_type,
        )
        self.inputs[inp.input_id] = inp
        fc.input_ids.append(inp.input_id)
        self.pending.setdefault(fc.function_id, deque()).append(inp.input_id)
        return inp

    def finish_input(
        self,
        inp: InputRecord,
        result: api_pb2.GenericResult,
        data_format: int = api_pb2.DATA_FORMAT_UNSPECIFIED,
        *,
        input_started_at: float = 0.0,
        output_created_at: float = 0.0,
        retry_count: int = 0,
    ) -> None:
        if inp.status == "done":
            return
        fc = self.function_calls[inp.function_call_id]
        inp.status = "done"
        fc.next_output_seq += 1
        inp.output_seq = fc.next_output_seq
        inp.output = api_pb2.FunctionGetOutputsItem(
            result=result,
            idx=inp.idx,
            input_id=inp.input_id,
            data_format=data_format,
            task_id=inp.task_id or "",
            input_started_at=input_started_at or inp.started_at or 0.0,
            output_created_at=output_created_at or time.time(),
            retry_count=retry_count,
        )
        if inp.task_id and inp.task_id in self.containers:
            rec = self.containers[inp.task_id]
            rec.current_inputs.discard(inp.input_id)
            rec.last_active = time.monotonic()
        try:
            self.pending.get(inp.function_id, deque()).remove(inp.input_id)
        except ValueError:
            pass
        self.notify()

    def fail_input(self, inp: InputRecord, status: int, message: str) -> None:
        self.finish_input(inp, api_pb2.GenericResult(status=status, exception=message))

    # ---------------------------------------------------------------- containers
    def _container_env(self, rec_task_id: str, url: str, args_path: Path, function_id: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MODAL_") and k not in ("PYTHONPATH", "PYTHONHOME", "PYTEST_CURRENT_TEST")
        }
        # secrets attached to the function (definition or with_options) become env vars, as on Modal
        for sid in self.function_def(function_id).secret_ids:
            env.update(self.secrets.get(sid, {}).get("env", {}))
        env.update(self.container_env)
        env.update(
            MODAL_SERVER_URL=url,
            MODAL_TASK_ID=rec_task_id,
            MODAL_IS_REMOTE="1",
            MODAL_CONTAINER_ARGUMENTS_PATH=str(args_path),
            MODAL_CONFIG_PATH=str(args_path.parent / "no-modal.toml"),
            MODAL_HEARTBEAT_INTERVAL=str(self.heartbeat_interval_s),
            PYTHONUNBUFFERED="1",
            FAKE_MODAL_SYS_PATH_EXCLUDE=os.pathsep.join(self.sys_path_exclude),
        )
        if self.container_packages:
            site = self.workdir / "_packages"
            site.mkdir(parents=True, exist_ok=True)
            for pkg in self.container_packages:
                link = site / Path(pkg).name
                if not link.exists():
                    link.symlink_to(Path(pkg).resolve(), target_is_directory=True)
            env["FAKE_MODAL_SYS_PATH_EXTRA"] = str(site)
        return env

    async def start_container(self, function_id: str) -> ContainerRecord:
        fn = self.functions[function_id]
        task_id = self.new_id("ta")
        workdir = self.workdir / task_id
        workdir.mkdir(parents=True, exist_ok=True)

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = grpclib.server.Server([FakeServicer(self, task_id)])
        listen(server, RecvRequest, self.rpc_listener(task_id))
        await server.start(sock=sock)
        url = f"http://127.0.0.1:{port}"

        args = api_pb2.ContainerArguments(
            task_id=task_id,
            function_id=function_id,
            app_id=fn["app_id"],
            function_def=self.function_def(function_id),
            app_layout=self.app_layout(fn["app_id"]),
            environment_name="main",
        )
        if fn.get("serialized_params"):
            args.serialized_params = fn["serialized_params"]
        args_path = workdir / "container_args.bin"
        args_path.write_bytes(args.SerializeToString())

        rec = ContainerRecord(task_id=task_id, function_id=function_id, app_id=fn["app_id"], url=url,
                              workdir=workdir, args=args)
        rec.env = self._container_env(task_id, url, args_path, function_id)
        rec._server = server
        self.containers[task_id] = rec
        proc = await asyncio.create_subprocess_exec(
            self.python, "-c", _BOOTSTRAP,
            cwd=str(workdir), env=rec.env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        rec._process = proc
        rec.pid = proc.pid
        self.spawn_bg(self._pump(rec, proc.stdout, rec.stdout_lines, api_pb2.FILE_DESCRIPTOR_STDOUT))
        self.spawn_bg(self._pump(rec, proc.stderr, rec.stderr_lines, api_pb2.FILE_DESCRIPTOR_STDERR))
        self.spawn_bg(self._watch(rec))
        self.notify()
        return rec

    async def _pump(self, rec: ContainerRecord, stream, lines: list, fd: int) -> None:
        with open(rec.workdir / ("stdout.log" if fd == api_pb2.FILE_DESCRIPTOR_STDOUT else "stderr.log"), "w") as f:
            while True:
                line = await stream.readline()
                if not line:
                    return
                text = line.decode(errors="replace")
                lines.append(text)
                f.write(text)
                f.flush()
                running = sorted(rec.current_inputs)
                inp = self.inputs.get(running[0]) if running else None
                self.logs.append(
                    (
                        rec.app_id,
                        api_pb2.TaskLogs(
                            data=text,
                            file_descriptor=fd,
                            timestamp=time.time(),
                            task_state=api_pb2.TASK_STATE_ACTIVE,
                            input_id=inp.input_id if inp else "",
                            function_call_id=inp.function_call_id if inp else "",
                        ),
                    )
                )
                self.notify()

    async def _watch(self, rec: ContainerRecord) -> None:
        rc = await rec._process.wait()
        # let the pumps drain
        await asyncio.sleep(0.05)
        rec.returncode = rc
        rec.ended_at = time.time()
        try:
            rec._server.close()
        except Exception:
            pass
        for input_id in list(rec.current_inputs):
            inp = self.inputs[input_id]
            if inp.status == "done":
                continue
            if rec.terminated_by:
                self.fail_input(inp, GENERIC.GENERIC_STATUS_TERMINATED, f"Container terminated: {rec.terminated_by}")
            elif rec.task_result is not None and rec.task_result.status not in (0, GENERIC.GENERIC_STATUS_SUCCESS):
                self.finish_input(inp, rec.task_result)
            else:
                self.fail_input(
                    inp, GENERIC.GENERIC_STATUS_INTERNAL_FAILURE,
                    f"Container {rec.task_id} exited with code {rc} while running input {input_id}:\n"
                    + "".join(rec.stderr_lines[-30:]),
                )
        rec.current_inputs.clear()
        self.notify()
        # crash before any input: fail what is queued instead of crash looping
        fid = rec.function_id
        queued = [self.inputs[i] for i in self.pending.get(fid, ())]
        if queued and not rec.served_inputs and not rec.kill_switch and not rec.terminated_by:
            res = rec.task_result
            for inp in queued:
                if res is not None and res.status not in (0, GENERIC.GENERIC_STATUS_SUCCESS):
                    self.finish_input(inp, res)
                else:
                    self.fail_input(
                        inp, GENERIC.GENERIC_STATUS_INTERNAL_FAILURE,
                        f"Container {rec.task_id} exited with code {rc} before taking an input:\n"
                        + "".join(rec.stderr_lines[-30:]),
                    )
        else:
            await self.ensure_containers(fid)

    async def ensure_containers(self, function_id: str) -> None:
        fn = self.functions.get(function_id)
        if fn is None or self.apps.get(fn["app_id"], {}).get("stopped"):
            return
        n_pending = len(self.pending.get(function_id, ()))
        if not n_pending:
            return
        live = [c for c in self.containers.values() if c.function_id == function_id and c.alive and not c.kill_switch
                and not c.terminated_by]
        idle = [c for c in live if not c.current_inputs]
        d = self.function_def(function_id)
        cap = d.autoscaler_settings.max_containers or d.concurrency_limit or self.max_containers_per_function
        cap = min(cap, self.max_containers_per_function)
        want = min(n_pending - len(idle), cap - len(live))
        for _ in range(max(0, want)):
            await self.start_container(function_id)

    async def terminate_container(self, rec: ContainerRecord, reason: str) -> None:
        if not rec.alive:
            return
        rec.terminated_by = reason
        rec.kill_switch = True
        self.notify()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(rec.pid, sig)
            except ProcessLookupError:
                return
            try:
                await asyncio.wait_for(asyncio.shield(rec._process.wait()), self.kill_grace_s)
                return
            except asyncio.TimeoutError:
                continue

    async def stop_app(self, app_id: str, reason: str) -> None:
        app = self.apps.get(app_id)
        if app is None or app.get("stopped"):
            return
        app["stopped"] = True
        app["state"] = api_pb2.APP_STATE_STOPPED
        for inp in self.inputs.values():
            if inp.status == "pending" and self.functions[inp.function_id]["app_id"] == app_id:
                self.fail_input(inp, GENERIC.GENERIC_STATUS_TERMINATED, f"App stopped ({reason})")
        recs = [c for c in self.containers.values() if c.app_id == app_id and c.alive]
        for c in recs:
            c.kill_switch = True  # idle containers exit cleanly through FunctionGetInputs
        self.notify()

        async def reap(rec: ContainerRecord):
            try:
                await asyncio.wait_for(asyncio.shield(rec._process.wait()), 3.0)
            except asyncio.TimeoutError:
                await self.terminate_container(rec, f"app {app_id} stopped ({reason})")

        await asyncio.gather(*(reap(c) for c in recs))

    async def shutdown(self) -> None:
        recs = [c for c in self.containers.values() if c.alive]
        await asyncio.gather(*(self.terminate_container(c, "fake control plane shut down") for c in recs))
        for c in self.containers.values():
            try:
                c._server.close()
            except Exception:
                pass
        for t in list(self._bg_tasks):
            t.cancel()


def _unimplemented(name: str):
    async def handler(self, stream):
        self.state.unimplemented.append(name)
        raise GRPCError(Status.UNIMPLEMENTED, f"{name} is not implemented by the fake Modal control plane")

    handler.__name__ = name
    return handler


_CLIENT_GONE = (StreamClosedError, StreamTerminatedError, ConnectionResetError, BrokenPipeError)


def _guarded(name: str, fn):
    async def handler(self, stream):
        try:
            return await fn(self, stream)
        except (GRPCError, asyncio.CancelledError):
            raise
        except _CLIENT_GONE:
            # The caller closed its stream while a held call (a heartbeat's long poll) was answering: a container
            # that exited, a client that gave up. A server drops the reply; it is no crash of the handler.
            return None
        except Exception as exc:
            self.state.errors.append(f"{name}: {traceback.format_exc()}")
            raise GRPCError(Status.INTERNAL, f"fake control plane crashed in {name}: {exc!r}")

    handler.__name__ = name
    return handler


def _finalize_servicer(cls):
    """Wrap implemented RPCs (crash capture) and fill the rest with UNIMPLEMENTED handlers."""
    for name in ALL_RPCS:
        impl = cls.__dict__.get(name)
        if impl is None:
            setattr(cls, name, _unimplemented(name))
        else:
            setattr(cls, name, _guarded(name, impl))
    cls.__abstractmethods__ = frozenset()
    return cls


@_finalize_servicer
class FakeServicer(api_grpc.ModalClientBase):
    def __init__(self, state: FakeState, task_id: str | None = None):
        self.state = state
        self.task_id = task_id

    async def _recv(self, stream, name: str):
        req = await stream.recv_message()
        self.state.requests.append((name, req))
        return req

    async def _reply(self, stream, msg=None, name: str | None = None):
        if msg is None:
            msg = REPLY_TYPES[name]()
        await stream.send_message(msg)

    # ------------------------------------------------------------ trivial / heartbeats
    async def ClientHello(self, stream):
        await self._recv(stream, "ClientHello")
        await self._reply(stream, api_pb2.ClientHelloResponse())

    async def AppHeartbeat(self, stream):
        req = await self._recv(stream, "AppHeartbeat")
        app = self.state.apps.get(req.app_id)
        if app is None:
            raise GRPCError(Status.NOT_FOUND, f"App {req.app_id} not found")
        if app.get("stopped"):
            raise GRPCError(Status.FAILED_PRECONDITION, "App is stopped")
        await self._reply(stream, name="AppHeartbeat")

    async def QueueHeartbeat(self, stream):
        await self._recv(stream, "QueueHeartbeat")
        await self._reply(stream, name="QueueHeartbeat")

    async def VolumeHeartbeat(self, stream):
        await self._recv(stream, "VolumeHeartbeat")
        await self._reply(stream, name="VolumeHeartbeat")

    async def VolumeCommit(self, stream):
        await self._recv(stream, "VolumeCommit")
        await self._reply(stream, name="VolumeCommit")

    async def VolumeReload(self, stream):
        await self._recv(stream, "VolumeReload")
        await self._reply(stream, name="VolumeReload")

    async def EnvironmentGetOrCreate(self, stream):
        req = await self._recv(stream, "EnvironmentGetOrCreate")
        try:
            from modal._image import LATEST_IMAGE_BUILDER_VERSION as ibv
        except Exception:  # pragma: no cover
            ibv = "2025.06"
        name = req.deployment_name or "main"
        await self._reply(
            stream,
            api_pb2.EnvironmentGetOrCreateResponse(
                environment_id="en-1",
                metadata=api_pb2.EnvironmentMetadata(
                    name=name, settings=api_pb2.EnvironmentSettings(image_builder_version=ibv)
                ),
            ),
        )

    # ------------------------------------------------------------ apps
    async def AppCreate(self, stream):
        req = await self._recv(stream, "AppCreate")
        app_id = self.state.new_id("ap")
        self.state.apps[app_id] = dict(
            app_id=app_id, description=req.description, state=req.app_state or api_pb2.APP_STATE_EPHEMERAL,
            function_ids={}, class_ids={}, stopped=False, created_at=time.time(),
        )
        await self._reply(
            stream,
            api_pb2.AppCreateResponse(app_id=app_id, app_page_url=f"http://127.0.0.1/fake-modal/apps/{app_id}"),
        )

    async def AppGetOrCreate(self, stream):
        req = await self._recv(stream, "AppGetOrCreate")
        key = (req.environment_name or "main", req.app_name)
        app_id = self.state.deployed_apps.get(key)
        if app_id is None:
            if req.object_creation_type not in (CREATE_IF_MISSING, CREATE_FAIL_IF_EXISTS):
                raise GRPCError(Status.NOT_FOUND, f"App '{req.app_name}' not found")
            app_id = self.state.new_id("ap")
            self.state.apps[app_id] = dict(
                app_id=app_id, description=req.app_name, state=api_pb2.APP_STATE_INITIALIZING,
                function_ids={}, class_ids={}, stopped=False, created_at=time.time(),
            )
            self.state.deployed_apps[key] = app_id
        await self._reply(stream, api_pb2.AppGetOrCreateResponse(app_id=app_id))

    async def AppPublish(self, stream):
        req = await self._recv(stream, "AppPublish")
        app = self.state.apps.get(req.app_id)
        if app is None:
            raise GRPCError(Status.NOT_FOUND, f"App {req.app_id} not found")
        app["function_ids"] = dict(req.function_ids)
        app["class_ids"] = dict(req.class_ids)
        app["state"] = req.app_state
        if req.name:
            app["name"] = req.name
        if req.app_state == api_pb2.APP_STATE_DEPLOYED and req.name:
            self.state.deployed_apps[("main", req.name)] = req.app_id
        await self._reply(
            stream,
            api_pb2.AppPublishResponse(url=f"http://127.0.0.1/fake-modal/apps/{req.app_id}", deployed_at=time.time()),
        )

    async def AppClientDisconnect(self, stream):
        req = await self._recv(stream, "AppClientDisconnect")
        await self._reply(stream, name="AppClientDisconnect")
        app = self.state.apps.get(req.app_id)
        if app is not None and app["state"] not in (api_pb2.APP_STATE_DEPLOYED, api_pb2.APP_STATE_DETACHED):
            self.state.spawn_bg(self.state.stop_app(req.app_id, "client disconnected"))

    async def AppStop(self, stream):
        req = await self._recv(stream, "AppStop")
        await self.state.stop_app(req.app_id, "AppStop")
        await self._reply(stream, name="AppStop")

    async def AppGetLayout(self, stream):
        req = await self._recv(stream, "AppGetLayout")
        await self._reply(stream, api_pb2.AppGetLayoutResponse(app_layout=self.state.app_layout(req.app_id)))

    async def AppGetLifecycle(self, stream):
        req = await self._recv(stream, "AppGetLifecycle")
        app = self.state.apps.get(req.app_id)
        if app is None:
            raise GRPCError(Status.NOT_FOUND, f"App {req.app_id} not found")
        await self._reply(
            stream, api_pb2.AppGetLifecycleResponse(lifecycle=api_pb2.AppLifecycle(app_state=app["state"]))
        )

    async def AppGetLogs(self, stream):
        """Stream the captured stdout/stderr of the app's containers (entry id = index in state.logs)."""
        req = await self._recv(stream, "AppGetLogs")
        st = self.state
        start = int(req.last_entry_id) + 1 if req.last_entry_id and req.last_entry_id.isdigit() else 0
        deadline = time.monotonic() + min(req.timeout or 55.0, 55.0)
        while True:
            batch = []
            for i in range(start, len(st.logs)):
                app_id, item = st.logs[i]
                if app_id != req.app_id:
                    continue
                if req.function_call_id and item.function_call_id != req.function_call_id:
                    continue
                if req.input_id and item.input_id != req.input_id:
                    continue
                batch.append((i, item))
            if batch:
                for i, item in batch:
                    await stream.send_message(api_pb2.TaskLogsBatch(entry_id=str(i), items=[item]))
                start = batch[-1][0] + 1
                return
            app = st.apps.get(req.app_id, {})
            if app.get("stopped") and not any(c.alive for c in st.containers.values() if c.app_id == req.app_id):
                await stream.send_message(api_pb2.TaskLogsBatch(app_done=True))
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await st.wait_change(remaining)

    # ------------------------------------------------------------ images / mounts
    async def ImageGetOrCreate(self, stream):
        req = await self._recv(stream, "ImageGetOrCreate")
        key = req.image.SerializeToString(deterministic=True)
        for image_id, (k, _) in self.state.images.items():
            if k == key:
                cached = True
                break
        else:
            image_id, cached = self.state.new_id("im"), False
            self.state.images[image_id] = (key, req)
        meta = self._image_metadata(req.builder_version)
        resp = api_pb2.ImageGetOrCreateResponse(image_id=image_id, metadata=meta)
        if cached:
            resp.result.status = GENERIC.GENERIC_STATUS_SUCCESS
        await self._reply(stream, resp)

    @staticmethod
    def _image_metadata(builder_version: str = "") -> api_pb2.ImageMetadata:
        v = sys.version_info
        return api_pb2.ImageMetadata(
            python_version_info=f"{v.major}.{v.minor}.{v.micro}", image_builder_version=builder_version
        )

    async def ImageJoinStreaming(self, stream):
        req = await self._recv(stream, "ImageJoinStreaming")
        bv = ""
        if req.image_id in self.state.images:
            bv = self.state.images[req.image_id][1].builder_version
        await stream.send_message(
            api_pb2.ImageJoinStreamingResponse(
                task_logs=[api_pb2.TaskLogs(data="fake image build: nothing to do\n",
                                            file_descriptor=api_pb2.FILE_DESCRIPTOR_INFO)]
            )
        )
        await stream.send_message(
            api_pb2.ImageJoinStreamingResponse(
                result=api_pb2.GenericResult(status=GENERIC.GENERIC_STATUS_SUCCESS),
                metadata=self._image_metadata(bv),
                eof=True,
            )
        )

    async def MountGetOrCreate(self, stream):
        req = await self._recv(stream, "MountGetOrCreate")
        mount_id = self.state.new_id("mo")
        self.state.mounts[mount_id] = req
        checksum = hashlib.sha256(req.SerializeToString(deterministic=True)).hexdigest()
        await self._reply(
            stream,
            api_pb2.MountGetOrCreateResponse(
                mount_id=mount_id, handle_metadata=api_pb2.MountHandleMetadata(content_checksum_sha256_hex=checksum)
            ),
        )

    async def MountBatchedCheckExistence(self, stream):
        req = await self._recv(stream, "MountBatchedCheckExistence")
        missing = [h for h in req.sha256_hex_hashes if h not in self.state.mount_files]
        await self._reply(stream, api_pb2.MountBatchedCheckExistenceResponse(missing_sha256_hex_hashes=missing))

    async def MountPutFile(self, stream):
        req = await self._recv(stream, "MountPutFile")
        which = req.WhichOneof("data_oneof")
        if which == "data":
            self.state.mount_files[req.sha256_hex] = req.data
        elif which == "data_blob_id":
            self.state.mount_files[req.sha256_hex] = self.state.blobs.get(req.data_blob_id, b"")
        await self._reply(stream, api_pb2.MountPutFileResponse(exists=req.sha256_hex in self.state.mount_files))

    # ------------------------------------------------------------ blobs
    async def BlobCreate(self, stream):
        await self._recv(stream, "BlobCreate")
        blob_id = self.state.new_id("bl")
        url = f"{self.state.blob_base_url}/blobs/{blob_id}"
        await self._reply(
            stream,
            api_pb2.BlobCreateResponse(blob_ids=[blob_id], upload_urls=api_pb2.UploadUrlList(items=[url])),
        )

    async def BlobGet(self, stream):
        req = await self._recv(stream, "BlobGet")
        if req.blob_id not in self.state.blobs:
            raise GRPCError(Status.NOT_FOUND, f"Blob {req.blob_id} not found")
        await self._reply(
            stream, api_pb2.BlobGetResponse(download_url=f"{self.state.blob_base_url}/blobs/{req.blob_id}")
        )

    # ------------------------------------------------------------ functions: definition
    def _new_function(self, function_id: str, app_id: str, **extra) -> dict:
        fn = self.state.functions.get(function_id)
        if fn is None:
            fn = dict(function_id=function_id, app_id=app_id, definition=api_pb2.Function(),
                      definition_id=self.state.new_id("de"), function_data=None, tag=None)
            self.state.functions[function_id] = fn
        fn.update(extra)
        return fn

    async def FunctionPrecreate(self, stream):
        req = await self._recv(stream, "FunctionPrecreate")
        function_id = req.existing_function_id or self.state.new_id("fu")
        fn = self._new_function(function_id, req.app_id, tag=req.function_name)
        if not fn["definition"].function_name:
            copy_common_fields(req, fn["definition"])
        meta = copy_common_fields(req, api_pb2.FunctionHandleMetadata())
        meta.app_id = req.app_id
        meta.definition_id = fn["definition_id"]
        await self._reply(stream, api_pb2.FunctionPrecreateResponse(function_id=function_id, handle_metadata=meta))

    async def FunctionCreate(self, stream):
        req = await self._recv(stream, "FunctionCreate")
        function_id = req.existing_function_id or self.state.new_id("fu")
        if req.HasField("function_data") and len(req.function_data.ranked_functions):
            definition = api_pb2.Function()
            definition.CopyFrom(req.function_data.ranked_functions[0].function)
            data = api_pb2.FunctionData()
            data.CopyFrom(req.function_data)
        else:
            definition = api_pb2.Function()
            definition.CopyFrom(req.function)
            data = None
        self._new_function(function_id, req.app_id, definition=definition, function_data=data,
                           tag=definition.function_name)
        await self._reply(
            stream,
            api_pb2.FunctionCreateResponse(
                function_id=function_id,
                function=definition,
                function_data=self.state.function_data(function_id),
                handle_metadata=self.state.handle_metadata(function_id),
            ),
        )

    async def FunctionBindParams(self, stream):
        req = await self._recv(stream, "FunctionBindParams")
        st = self.state
        base = st.functions.get(req.function_id)
        if base is None:
            raise GRPCError(Status.NOT_FOUND, f"Function {req.function_id} not found")
        key = req.SerializeToString(deterministic=True)
        function_id = st.bound_functions.get(key)
        if function_id is None:
            function_id = st.new_id("fu")
            st.bound_functions[key] = function_id
            d = api_pb2.Function()
            d.CopyFrom(base["definition"])
            o = req.function_options
            if o.HasField("resources"):
                d.resources.CopyFrom(o.resources)
            if o.HasField("timeout_secs"):
                d.timeout_secs = o.timeout_secs
            if o.HasField("retry_policy"):
                d.retry_policy.CopyFrom(o.retry_policy)
            if o.replace_secret_ids:
                del d.secret_ids[:]
                d.secret_ids.extend(o.secret_ids)
            if o.replace_volume_mounts:
                del d.volume_mounts[:]
                d.volume_mounts.extend(o.volume_mounts)
            for name in ("concurrency_limit", "task_idle_timeout_secs", "warm_pool_size", "max_concurrent_inputs",
                         "target_concurrent_inputs", "batch_max_size", "batch_linger_ms", "cloud_provider_str",
                         "routing_region"):
                if o.HasField(name):
                    setattr(d, name, getattr(o, name))
            if o.HasField("scheduler_placement"):
                d.scheduler_placement.CopyFrom(o.scheduler_placement)
            st.functions[function_id] = dict(
                function_id=function_id, app_id=base["app_id"], definition=d, definition_id=base["definition_id"],
                function_data=None, tag=base["tag"], base_function_id=req.function_id, options=o,
                serialized_params=req.serialized_params,
            )
        await self._reply(
            stream,
            api_pb2.FunctionBindParamsResponse(
                bound_function_id=function_id, handle_metadata=st.handle_metadata(function_id)
            ),
        )

    async def FunctionGetById(self, stream):
        req = await self._recv(stream, "FunctionGetById")
        if req.function_id not in self.state.functions:
            raise GRPCError(Status.NOT_FOUND, f"Function {req.function_id} not found")
        await self._reply(
            stream,
            api_pb2.FunctionGetByIdResponse(
                function=self.state.function_data(req.function_id),
                handle_metadata=self.state.handle_metadata(req.function_id),
            ),
        )

    async def FunctionGet(self, stream):
        req = await self._recv(stream, "FunctionGet")
        app_id = self.state.deployed_apps.get((req.environment_name or "main", req.app_name))
        fid = self.state.apps.get(app_id, {}).get("function_ids", {}).get(req.object_tag) if app_id else None
        if fid is None:
            raise GRPCError(Status.NOT_FOUND, f"Function '{req.object_tag}' not found in app '{req.app_name}'")
        await self._reply(
            stream,
            api_pb2.FunctionGetResponse(
                function_id=fid, handle_metadata=self.state.handle_metadata(fid),
                function=self.state.function_data(fid),
            ),
        )

    # ------------------------------------------------------------ functions: calls (client side)
    async def FunctionMap(self, stream):
        req = await self._recv(stream, "FunctionMap")
        st = self.state
        if req.function_id not in st.functions:
            raise GRPCError(Status.NOT_FOUND, f"Function {req.function_id} not found")
        fc = FunctionCallRecord(
            function_call_id=st.new_id("fc"), function_id=req.function_id, call_type=req.function_call_type,
            invocation_type=req.function_call_invocation_type,
        )
        st.function_calls[fc.function_call_id] = fc
        items = []
        for item in req.pipelined_inputs:
            inp = st.add_input(fc, item)
            items.append(api_pb2.FunctionPutInputsResponseItem(idx=item.idx, input_id=inp.input_id,
                                                               input_jwt=f"jwt-{inp.input_id}"))
        d = st.function_def(req.function_id)
        resp = api_pb2.FunctionMapResponse(
            function_call_id=fc.function_call_id, pipelined_inputs=items,
            function_call_jwt=f"jwt-{fc.function_call_id}", max_inputs_outstanding=1000,
        )
        if d.HasField("retry_policy"):
            resp.retry_policy.CopyFrom(d.retry_policy)
        st.notify()
        await st.ensure_containers(req.function_id)
        await self._reply(stream, resp)

    async def FunctionPutInputs(self, stream):
        req = await self._recv(stream, "FunctionPutInputs")
        st = self.state
        fc = st.function_calls.get(req.function_call_id)
        if fc is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call {req.function_call_id} not found")
        items = []
        for item in req.inputs:
            inp = st.add_input(fc, item)
            items.append(api_pb2.FunctionPutInputsResponseItem(idx=item.idx, input_id=inp.input_id,
                                                               input_jwt=f"jwt-{inp.input_id}"))
        st.notify()
        await st.ensure_containers(fc.function_id)
        await self._reply(stream, api_pb2.FunctionPutInputsResponse(inputs=items))

    async def FunctionFinishInputs(self, stream):
        req = await self._recv(stream, "FunctionFinishInputs")
        fc = self.state.function_calls.get(req.function_call_id)
        if fc is not None:
            fc.num_inputs = req.num_inputs
        await self._reply(stream, name="FunctionFinishInputs")

    async def FunctionGetOutputs(self, stream):
        req = await self._recv(stream, "FunctionGetOutputs")
        st = self.state
        fc = st.function_calls.get(req.function_call_id)
        if fc is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call {req.function_call_id} not found")
        deadline = time.monotonic() + max(0.0, min(req.timeout, 55.0))
        if req.last_entry_id and req.last_entry_id.split("-")[0].isdigit():
            after = int(req.last_entry_id.split("-")[0])
        else:
            after = 0
        while True:
            outs = []
            for input_id in fc.input_ids:
                inp = st.inputs[input_id]
                if inp.status != "done" or inp.cleared:
                    continue
                if req.HasField("start_idx"):
                    end = req.end_idx if req.HasField("end_idx") else req.start_idx
                    if not (req.start_idx <= inp.idx <= end):
                        continue
                elif inp.output_seq <= after:
                    continue
                outs.append(inp)
            outs.sort(key=lambda i: i.output_seq)
            if req.max_values:
                outs = outs[: req.max_values]
            unfinished = sum(1 for i in fc.input_ids if st.inputs[i].status != "done")
            if fc.num_inputs is not None:
                unfinished += max(0, fc.num_inputs - len(fc.input_ids))
            if outs or time.monotonic() >= deadline:
                resp = api_pb2.FunctionGetOutputsResponse(
                    outputs=[i.output for i in outs], idxs=[i.idx for i in outs],
                    num_unfinished_inputs=unfinished,
                    last_entry_id=f"{max([i.output_seq for i in outs], default=after)}-0",
                )
                if req.clear_on_success:
                    for i in outs:
                        if i.output.result.status == GENERIC.GENERIC_STATUS_SUCCESS:
                            i.cleared = True
                await self._reply(stream, resp)
                return
            await st.wait_change(deadline - time.monotonic())

    async def FunctionCallCancel(self, stream):
        req = await self._recv(stream, "FunctionCallCancel")
        st = self.state
        st.cancellations.append(req)
        fc = st.function_calls.get(req.function_call_id)
        if fc is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call {req.function_call_id} not found")
        fc.cancelled = True
        fc.terminate_containers = req.terminate_containers
        kill = set()
        for input_id in fc.input_ids:
            inp = st.inputs[input_id]
            if inp.status == "pending":
                st.fail_input(inp, GENERIC.GENERIC_STATUS_TERMINATED, "Function call was cancelled")
            elif inp.status == "running":
                rec = st.containers.get(inp.task_id)
                if rec is None or not rec.alive:
                    st.fail_input(inp, GENERIC.GENERIC_STATUS_TERMINATED, "Function call was cancelled")
                elif req.terminate_containers:
                    kill.add(rec.task_id)
                else:
                    rec.cancel_pending.append(input_id)  # delivered by the next ContainerHeartbeat
        st.notify()
        await self._reply(stream, name="FunctionCallCancel")
        for task_id in kill:
            st.spawn_bg(st.terminate_container(st.containers[task_id], f"FunctionCallCancel {fc.function_call_id}"))

    async def FunctionCallFromId(self, stream):
        req = await self._recv(stream, "FunctionCallFromId")
        fc = self.state.function_calls.get(req.function_call_id)
        if fc is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call {req.function_call_id} not found")
        await self._reply(
            stream,
            api_pb2.FunctionCallFromIdResponse(
                function_call_id=fc.function_call_id,
                num_inputs=fc.num_inputs or len(fc.input_ids),
                metadata=api_pb2.FunctionCallHandleMetadata(
                    app_id=self.state.functions[fc.function_id]["app_id"], function_id=fc.function_id
                ),
            ),
        )

    def _fc_for_data(self, req) -> FunctionCallRecord | None:
        # `attempt_token` and `function_call_id` share a oneof: the container sends the attempt token
        if req.attempt_token:
            inp = self.state.inputs.get(req.attempt_token.removeprefix("at-"))
            return self.state.function_calls.get(inp.function_call_id) if inp else None
        return self.state.function_calls.get(req.function_call_id)

    async def FunctionCallGetDataOut(self, stream):
        req = await self._recv(stream, "FunctionCallGetDataOut")
        st = self.state
        fc = self._fc_for_data(req)
        if fc is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call {req.function_call_id} not found")
        last = req.last_index
        deadline = time.monotonic() + 55.0
        while time.monotonic() < deadline:
            for chunk in [c for c in fc.data_out if c.index > last]:
                await stream.send_message(chunk)
                last = chunk.index
            if all(st.inputs[i].status == "done" for i in fc.input_ids) and not [
                c for c in fc.data_out if c.index > last
            ]:
                return
            await st.wait_change(deadline - time.monotonic())

    # ------------------------------------------------------------ functions: container side
    def _container(self) -> ContainerRecord:
        rec = self.state.containers.get(self.task_id or "")
        if rec is None:
            raise GRPCError(Status.PERMISSION_DENIED, "container RPC on the client port")
        return rec

    async def ContainerHello(self, stream):
        await self._recv(stream, "ContainerHello")
        self._container().hello = True
        self.state.notify()
        await self._reply(stream, name="ContainerHello")

    async def ContainerHeartbeat(self, stream):
        """Held open up to `heartbeat_hold_s` so that a cancellation reaches the container at once.

        A cancelled input is re-sent on every heartbeat until its output arrives: the container silently
        drops ids it has not registered yet (a cancel racing the input's delivery), and repeats are harmless.
        """
        await self._recv(stream, "ContainerHeartbeat")
        rec = self._container()

        def to_cancel():
            return [i for i in rec.cancel_pending if i in rec.current_inputs]

        deadline = time.monotonic() + self.state.heartbeat_hold_s
        while not to_cancel() and time.monotonic() < deadline:
            await self.state.wait_change(deadline - time.monotonic())
        resp = api_pb2.ContainerHeartbeatResponse()
        ids = to_cancel()
        if ids:
            resp.cancel_input_event.CopyFrom(api_pb2.CancelInputEvent(input_ids=ids))
        await self._reply(stream, resp)

    async def FunctionGetInputs(self, stream):
        await self._recv(stream, "FunctionGetInputs")
        st = self.state
        rec = self._container()
        deadline = time.monotonic() + st.get_inputs_hold_s
        d = st.function_def(rec.function_id)
        idle_limit = min(d.autoscaler_settings.scaledown_window or d.task_idle_timeout_secs or st.idle_timeout_s,
                         st.idle_timeout_s)
        while True:
            if rec.kill_switch or st.apps.get(rec.app_id, {}).get("stopped"):
                rec.kill_switch = True
                await self._reply(stream, api_pb2.FunctionGetInputsResponse(
                    inputs=[api_pb2.FunctionGetInputsItem(kill_switch=True)]))
                return
            queue = st.pending.get(rec.function_id, deque())
            while queue:
                inp = st.inputs[queue.popleft()]
                if inp.status != "pending":
                    continue
                inp.status, inp.task_id, inp.started_at = "running", rec.task_id, time.time()
                rec.current_inputs.add(inp.input_id)
                rec.served_inputs.append(inp.input_id)
                rec.last_active = time.monotonic()
                st.notify()
                await self._reply(stream, api_pb2.FunctionGetInputsResponse(inputs=[api_pb2.FunctionGetInputsItem(
                    input_id=inp.input_id, input=inp.input, function_call_id=inp.function_call_id,
                    function_call_invocation_type=inp.invocation_type, retry_count=0, function_map_idx=inp.idx,
                    attempt_token=f"at-{inp.input_id}",
                )]))
                return
            if not rec.current_inputs and time.monotonic() - rec.last_active > idle_limit:
                rec.kill_switch = True
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self._reply(stream, api_pb2.FunctionGetInputsResponse())
                return
            await st.wait_change(min(remaining, 1.0))

    async def FunctionPutOutputs(self, stream):
        req = await self._recv(stream, "FunctionPutOutputs")
        st = self.state
        self._container()
        for item in req.outputs:
            inp = st.inputs.get(item.input_id)
            if inp is None:
                raise GRPCError(Status.NOT_FOUND, f"Input {item.input_id} not found")
            st.finish_input(inp, item.result, item.data_format, input_started_at=item.input_started_at,
                            output_created_at=item.output_created_at, retry_count=item.retry_count)
        await self._reply(stream, name="FunctionPutOutputs")

    async def FunctionCallPutDataOut(self, stream):
        req = await self._recv(stream, "FunctionCallPutDataOut")
        fc = self._fc_for_data(req)
        if fc is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call {req.function_call_id} not found")
        fc.data_out.extend(req.data_chunks)
        self.state.notify()
        await self._reply(stream, name="FunctionCallPutDataOut")

    async def TaskResult(self, stream):
        req = await self._recv(stream, "TaskResult")
        self._container().task_result = req.result
        self.state.notify()
        await self._reply(stream, name="TaskResult")

    # ------------------------------------------------------------ queues
    def _queue(self, queue_id: str) -> dict:
        q = self.state.queues.get(queue_id)
        if q is None:
            raise GRPCError(Status.NOT_FOUND, f"Queue {queue_id} not found")
        return q

    async def QueueGetOrCreate(self, stream):
        req = await self._recv(stream, "QueueGetOrCreate")
        st = self.state
        key = (req.environment_name or "main", req.deployment_name)
        if req.object_creation_type == EPHEMERAL or not req.deployment_name:
            queue_id = None
        elif key in st.named_queues:
            if req.object_creation_type == CREATE_FAIL_IF_EXISTS:
                raise GRPCError(Status.ALREADY_EXISTS, f"Queue '{req.deployment_name}' already exists")
            queue_id = st.named_queues[key]
        elif req.object_creation_type in (CREATE_IF_MISSING, CREATE_FAIL_IF_EXISTS):
            queue_id = None
        else:
            raise GRPCError(Status.NOT_FOUND, f"Queue '{req.deployment_name}' not found")
        if queue_id is None:
            queue_id = st.new_id("qu")
            st.queues[queue_id] = dict(name=req.deployment_name, partitions={}, seq=0, created_at=time.time())
            if req.deployment_name and req.object_creation_type != EPHEMERAL:
                st.named_queues[key] = queue_id
        await self._reply(stream, api_pb2.QueueGetOrCreateResponse(queue_id=queue_id, metadata=self._qmeta(queue_id)))

    def _qmeta(self, queue_id: str) -> api_pb2.QueueMetadata:
        q = self.state.queues[queue_id]
        return api_pb2.QueueMetadata(name=q["name"], creation_info=api_pb2.CreationInfo(created_at=q["created_at"]))

    async def QueueGetById(self, stream):
        req = await self._recv(stream, "QueueGetById")
        self._queue(req.queue_id)
        await self._reply(stream, api_pb2.QueueGetByIdResponse(queue_id=req.queue_id, metadata=self._qmeta(req.queue_id)))

    async def QueueDelete(self, stream):
        req = await self._recv(stream, "QueueDelete")
        self.state.queues.pop(req.queue_id, None)
        for k, v in list(self.state.named_queues.items()):
            if v == req.queue_id:
                del self.state.named_queues[k]
        await self._reply(stream, name="QueueDelete")

    async def QueuePut(self, stream):
        req = await self._recv(stream, "QueuePut")
        q = self._queue(req.queue_id)
        part = q["partitions"].setdefault(req.partition_key, [])
        if len(part) + len(req.values) > 5000:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, "Queue partition is full (5000 items)")
        for v in req.values:
            q["seq"] += 1
            part.append((q["seq"], v))
        self.state.notify()
        await self._reply(stream, name="QueuePut")

    async def QueueGet(self, stream):
        req = await self._recv(stream, "QueueGet")
        st = self.state
        deadline = time.monotonic() + max(0.0, min(req.timeout, 55.0))
        n = max(1, req.n_values)
        while True:
            q = self._queue(req.queue_id)
            part = q["partitions"].get(req.partition_key, [])
            if part or time.monotonic() >= deadline:
                values = [v for _, v in part[:n]]
                del part[:n]
                st.notify()
                await self._reply(stream, api_pb2.QueueGetResponse(values=values))
                return
            await st.wait_change(deadline - time.monotonic())

    async def QueueLen(self, stream):
        req = await self._recv(stream, "QueueLen")
        q = self._queue(req.queue_id)
        if req.total:
            n = sum(len(p) for p in q["partitions"].values())
        else:
            n = len(q["partitions"].get(req.partition_key, []))
        await self._reply(stream, api_pb2.QueueLenResponse(len=n))

    async def QueueClear(self, stream):
        req = await self._recv(stream, "QueueClear")
        q = self._queue(req.queue_id)
        if req.all_partitions:
            q["partitions"].clear()
        else:
            q["partitions"].pop(req.partition_key, None)
        await self._reply(stream, name="QueueClear")

    async def QueueNextItems(self, stream):
        req = await self._recv(stream, "QueueNextItems")
        st = self.state
        after = int(req.last_entry_id) if req.last_entry_id.isdigit() else 0
        deadline = time.monotonic() + max(0.0, min(req.item_poll_timeout, 55.0))
        while True:
            q = self._queue(req.queue_id)
            items = [api_pb2.QueueItem(value=v, entry_id=str(seq))
                     for seq, v in q["partitions"].get(req.partition_key, []) if seq > after]
            if items or time.monotonic() >= deadline:
                await self._reply(stream, api_pb2.QueueNextItemsResponse(items=items))
                return
            await st.wait_change(deadline - time.monotonic())

    # ------------------------------------------------------------ secrets / volumes
    async def SecretGetOrCreate(self, stream):
        req = await self._recv(stream, "SecretGetOrCreate")
        st = self.state
        key = (req.environment_name or "main", req.deployment_name)
        if req.object_creation_type in (EPHEMERAL, ANONYMOUS_OWNED_BY_APP) or not req.deployment_name:
            secret_id = st.new_id("st")
            st.secrets[secret_id] = dict(name="", env=dict(req.env_dict))
        elif key in st.named_secrets and req.object_creation_type != CREATE_FAIL_IF_EXISTS:
            secret_id = st.named_secrets[key]
            if req.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS:
                st.secrets[secret_id]["env"] = dict(req.env_dict)
        elif key in st.named_secrets:
            raise GRPCError(Status.ALREADY_EXISTS, f"Secret '{req.deployment_name}' already exists")
        elif req.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED:
            raise GRPCError(Status.NOT_FOUND, f"Secret '{req.deployment_name}' not found")
        else:
            secret_id = st.new_id("st")
            st.secrets[secret_id] = dict(name=req.deployment_name, env=dict(req.env_dict))
            st.named_secrets[key] = secret_id
        missing = [k for k in req.required_keys if k not in st.secrets[secret_id]["env"]]
        if missing:
            raise GRPCError(Status.NOT_FOUND, f"Secret is missing key(s): {', '.join(missing)}")
        await self._reply(
            stream,
            api_pb2.SecretGetOrCreateResponse(
                secret_id=secret_id,
                metadata=api_pb2.SecretMetadata(name=st.secrets[secret_id]["name"],
                                                keys=sorted(st.secrets[secret_id]["env"])),
            ),
        )

    async def VolumeGetOrCreate(self, stream):
        req = await self._recv(stream, "VolumeGetOrCreate")
        st = self.state
        key = (req.environment_name or "main", req.deployment_name)
        if req.object_creation_type == EPHEMERAL or not req.deployment_name:
            volume_id = st.new_id("vo")
            st.volumes[volume_id] = dict(name="", version=req.version)
        elif key in st.named_volumes:
            if req.object_creation_type == CREATE_FAIL_IF_EXISTS:
                raise GRPCError(Status.ALREADY_EXISTS, f"Volume '{req.deployment_name}' already exists")
            volume_id = st.named_volumes[key]
        elif req.object_creation_type in (CREATE_IF_MISSING, CREATE_FAIL_IF_EXISTS):
            volume_id = st.new_id("vo")
            st.volumes[volume_id] = dict(name=req.deployment_name, version=req.version)
            st.named_volumes[key] = volume_id
        else:
            raise GRPCError(Status.NOT_FOUND, f"Volume '{req.deployment_name}' not found")
        v = st.volumes[volume_id]
        await self._reply(
            stream,
            api_pb2.VolumeGetOrCreateResponse(
                volume_id=volume_id, version=v["version"],
                metadata=api_pb2.VolumeMetadata(name=v["name"], version=v["version"]),
            ),
        )
