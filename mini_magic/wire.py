"""The one wire format every backend speaks: Job, events, value packing and message framing.

This module is imported by the worker, so it uses only the standard library and cloudpickle: the same code must run
in any remote image. It is the contract between the kernel side and the worker side:

* A **Job** travels as frames ``[header, body, *buffers]``. The header is JSON and is checked *before* anything is
  unpickled, so a version mismatch gives a clear message instead of a cryptic unpickling error.
* **Values** (the closure going out, the results coming back) are pickled name by name into ONE stream by ONE
  pickler: each name is its own segment (a failure names the variable), yet the pickler's memo spans segments, so
  two names that share an object (``model`` and an ``optimizer`` holding its parameters) still share it remotely.
  Large buffers (numpy arrays, bytes-likes) go out-of-band with pickle protocol 5 and are never copied into the
  pickle stream.
* **Events** are small frozen dataclasses with a sequence number, sent in batches (a message is a list of events).
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import platform
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cloudpickle

from . import namespace_pickling
from .pickler import OPEN_FILES, CountingBuffers, Pickler, Unpickler

__all__ = ["OPEN_FILES", "Pickler"]  # re-exported: the wire's picklers live in pickler.py

PROTOCOL_VERSION = 1
PICKLE_PROTOCOL = 5


def python_version() -> str:
    return "%d.%d" % sys.version_info[:2]


@dataclass(frozen=True)
class ModuleRef:
    """A module travels by name and is re-imported on the other side."""

    name: str


@dataclass(frozen=True)
class PackedValues:
    """Several named values pickled into one stream (see the module docstring for why one stream)."""

    names: tuple[str, ...]
    data: bytes
    buffers: tuple[Any, ...] = ()

    @property
    def nbytes(self) -> int:
        return len(self.data) + sum(memoryview(b).nbytes for b in self.buffers)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # As PickleBuffers, the large buffers go out-of-band whenever the enclosing pickle (a Job, a Result event)
        # is written with protocol 5 and a buffer_callback, and in-band (copied) otherwise.
        return (PackedValues, (self.names, self.data, tuple(pickle.PickleBuffer(b) for b in self.buffers)))

    def unpack(self, on_error: Callable[[str, BaseException], None] | None = None, *,
               home: dict[str, Any] | None = None, known: dict[str, Any] | None = None,
               sizes: dict[str, int] | None = None) -> dict[str, Any]:
        """Rebuild the values in order; a failure is raised, or reported to ``on_error(name, exc)``.

        Names after a failed one are reported as failed too: their segments may refer to objects of the failed
        segment through the shared memo, and resuming with a misaligned memo could silently give wrong objects.
        ``home`` and ``known``: see :mod:`mini_magic.namespace_pickling`. ``sizes``, when given, receives each
        value's size in bytes (its segment of the stream and the buffers it took), at no extra cost.
        """
        stream = io.BytesIO(self.data)
        buffers = CountingBuffers(self.buffers)
        unpickler = Unpickler(stream, buffers=buffers)
        values: dict[str, Any] = {}
        with namespace_pickling.receiving(home, known):
            for index, name in enumerate(self.names):
                start, buffers.nbytes = stream.tell(), 0
                try:
                    values[name] = unpickler.load()
                except Exception as exc:  # noqa: BLE001 - reported with the name; the caller decides
                    if on_error is None:
                        raise
                    on_error(name, exc)
                    for later in self.names[index + 1 :]:
                        on_error(later, UnpackAborted(f"it came after {name!r}, which could not be rebuilt"))
                    break
                if sizes is not None:
                    sizes[name] = stream.tell() - start + buffers.nbytes
        return values


class UnpackAborted(Exception):
    """A value was not rebuilt because an earlier value in the same stream failed."""


class PackError(Exception):
    """A named value could not be pickled."""

    def __init__(self, name: str, value: Any, cause: BaseException) -> None:
        self.name = name
        self.value = value
        self.cause = cause
        super().__init__(f"{name}: {type(cause).__name__}: {cause}")


def pack_values(
    values: dict[str, Any],
    *,
    pickler_factory: Callable[..., pickle.Pickler] | None = None,
    skip_failures: bool = False,
    **pickler_options: Any,
) -> tuple[PackedValues, dict[str, PackError]]:
    """Pickle ``values`` name by name into one stream (``pickler_options``: see :class:`Pickler`).

    With ``skip_failures`` a name that cannot be pickled is left out (and reported) while the others are packed;
    the stream is rebuilt without it, because a half-written segment may have left memo entries that later
    segments would refer to. Otherwise the first failure raises :class:`PackError`.
    """
    failures: dict[str, PackError] = {}
    remaining = dict(values)
    while True:
        stream = io.BytesIO()
        buffers: list[pickle.PickleBuffer] = []
        factory = pickler_factory or Pickler
        options = dict(pickler_options)
        options["arrays"] = [*options.get("arrays", ()), *_arrays(remaining.values())]
        pickler = factory(stream, protocol=PICKLE_PROTOCOL, buffer_callback=buffers.append, **options)
        failed: str | None = None
        for name, value in remaining.items():
            try:
                pickler.dump(value)
            except BaseException as exc:  # noqa: BLE001 - any pickling failure is the value's fault
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                error = PackError(name, value, exc)
                if not skip_failures:
                    raise error from exc
                failures[name] = error
                failed = name
                break
        if failed is None:
            raw = tuple(_raw(b) for b in buffers)
            packed = PackedValues(tuple(remaining), stream.getvalue(), raw)
            return packed, failures
        del remaining[failed]


def _arrays(values: Iterable[Any]) -> list[Any]:
    """The numpy arrays among the values packed by name: views of them stay views (see Pickler)."""
    return [v for v in values if type(v).__name__ == "ndarray" and hasattr(v, "__array_interface__")]


def _raw(buffer: pickle.PickleBuffer) -> Any:
    try:
        return buffer.raw()
    except BufferError:  # non-contiguous: fall back to one copy
        return bytes(buffer)


@dataclass(frozen=True)
class JobHeader:
    """Read before anything is unpickled: who sent the job and in which format."""

    run_id: str
    protocol: int = PROTOCOL_VERSION
    python: str = field(default_factory=python_version)
    cloudpickle: str = cloudpickle.__version__
    kind: str = "cell"  # "cell": run source in a fresh namespace; "call": call a packed function (see Job)

    def to_bytes(self) -> bytes:
        return control("job", **dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobHeader:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def mismatch(self) -> str | None:
        """Why this process cannot run the job, or None when it can."""
        here_cp = cloudpickle.__version__
        if self.protocol != PROTOCOL_VERSION:
            return (
                f"the kernel speaks mini_magic wire protocol {self.protocol} but the worker speaks "
                f"{PROTOCOL_VERSION}: install the same mini_magic version on both sides"
            )
        if self.python != python_version():
            return (
                f"the kernel runs Python {self.python} but the worker runs Python {python_version()} "
                f"({platform.python_implementation()}): pickled code only loads in the same Python minor version; "
                "use a worker image with the kernel's Python"
            )
        if self.cloudpickle.split(".")[:2] != here_cp.split(".")[:2]:
            return (
                f"the kernel has cloudpickle {self.cloudpickle} but the worker has cloudpickle {here_cp}: "
                f"pin cloudpickle=={self.cloudpickle} in the worker image"
            )
        return None


@dataclass(frozen=True)
class ModuleSource:
    """One file of a local module shipped with the job, so it imports where the notebook's files do not exist."""

    name: str  # dotted module name
    source: str
    is_package: bool
    origin: str  # the local path, shown in tracebacks


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to run one cell, or one call (``header.kind == "call"``).

    A call is packed like a cell: its ``closure`` holds the function and its arguments under the names of
    :func:`call_values` (not bound in the run's namespace: the function's globals are), so hither stubs, local modules,
    notebook functions and ``linecache`` travel as for a cell. ``source`` is empty and the fields about a cell's
    names (``outputs``, ``candidates``, ``deleted``, ``display_trailing``) keep their defaults; its Result holds one
    name, :data:`RETURN`, and a generator's items come first, each as a :class:`Yield`."""

    header: JobHeader
    source: str  # the cell after IPython's transform_cell
    filename: str  # the name tracebacks show for the cell
    first_line: int  # line number of the source's first line in the notebook cell
    closure: PackedValues
    modules: tuple[ModuleSource, ...] = ()
    outputs: tuple[str, ...] | None = None  # --out: exactly these names come back; None: automatic
    candidates: tuple[str, ...] = ()  # names the analysis found bound or mutated
    deleted: tuple[str, ...] = ()  # names the cell may `del`
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    linecache: dict[str, str] = field(default_factory=dict)  # filename -> source, for remote tracebacks
    display_trailing: bool = True
    hither_interval: float | None = None  # seconds between hither call batches; None: the cell uses no hither
    secret_keys: tuple[str, ...] = ()  # env variables holding secrets: their VALUES are scrubbed from output
    # Unchanged inputs in the results travel as references to the kernel's objects (see worker/inputs.py); False when
    # the result may be read by another kernel (a detached run), which does not hold them.
    return_known: bool = True
    settings: dict[str, Any] = field(default_factory=dict)  # the kernel's library settings (library_settings)


RETURN = "return"  # the one name in a call's Result: its return value
GUARDS = "<guards>"  # the run's guards (mini_magic.guards), packed with the closure: not a name of the run
_FUNCTION = "function"


def call_values(function: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A call as named values, one per argument, so that a failure to pack one names it (``args[1]``,
    ``kwargs[model]``) and an unchanged argument can come back as the caller's own object."""
    return {_FUNCTION: function, **{f"args[{i}]": a for i, a in enumerate(args)},
            **{f"kwargs[{k}]": v for k, v in kwargs.items()}}


def split_call(values: dict[str, Any]) -> tuple[Any, list[Any], dict[str, Any]]:
    """The inverse of :func:`call_values` (values in packing order)."""
    args = [v for n, v in values.items() if n.startswith("args[")]
    kwargs = {n[len("kwargs["):-1]: v for n, v in values.items() if n.startswith("kwargs[")}
    return values[_FUNCTION], args, kwargs


def encode_job(job: Job) -> list[Any]:
    """Frames: the JSON header, then the pickled body, then its out-of-band buffers."""
    body, buffers = dumps({f.name: getattr(job, f.name) for f in dataclasses.fields(job) if f.name != "header"})
    return [job.header.to_bytes(), body, *buffers]


def decode_job(header: JobHeader, frames: Sequence[Any]) -> Job:
    """Unpickle the body of a job whose header was already checked."""
    body = loads(frames[0], frames[1:])
    return Job(header=header, **body)


def read_control(frame: Any) -> dict[str, Any]:
    """The first frame of every kernel -> worker message is a small JSON control record."""
    return json.loads(bytes(frame))


def control(message_type: str, **fields: Any) -> bytes:
    """The JSON first frame of a kernel -> worker message (``type``: job or shutdown)."""
    return json.dumps({"type": message_type, **fields}).encode()


@dataclass(frozen=True)
class Event:
    seq: int
    kind: ClassVar[str] = "event"
    terminal: ClassVar[bool] = False
    # Whether its arrival wakes the kernel thread draining the run at once (see QueuedRunHandle): all but Started.
    wakes: ClassVar[bool] = True


@dataclass(frozen=True)
class Started(Event):
    run_id: str
    pid: int
    host: str
    kind: ClassVar[str] = "started"
    # Taken with the next event, or QueuedRunHandle.QUIET_FOR later: a short cell's Started and Result are handled
    # in one go (one run-store write, one status message), a longer run shows as running 20 ms after it started.
    wakes: ClassVar[bool] = False


@dataclass(frozen=True)
class Stdout(Event):
    text: str
    kind: ClassVar[str] = "stdout"


@dataclass(frozen=True)
class Stderr(Event):
    text: str
    kind: ClassVar[str] = "stderr"


@dataclass(frozen=True)
class Display(Event):
    data: dict[str, Any]
    metadata: dict[str, Any]
    display_id: str | None = None
    kind: ClassVar[str] = "display"


@dataclass(frozen=True)
class UpdateDisplay(Display):
    """Replace what an earlier Display with the same ``display_id`` shows."""

    kind: ClassVar[str] = "update_display"


@dataclass(frozen=True)
class ClearOutput(Event):
    wait: bool = False
    kind: ClassVar[str] = "clear_output"


@dataclass(frozen=True)
class HitherCalls(Event):
    """Calls of local callbacks made by the remote code, in order: one packed value ``calls``, a list of
    ``(ref_id, args, kwargs)``."""

    calls: PackedValues
    kind: ClassVar[str] = "hither_calls"


@dataclass(frozen=True)
class Progress(Event):
    """A remote tqdm bar's state; the kernel mirrors it as a local notebook bar."""

    bar_id: str
    n: float
    total: float | None
    desc: str = ""
    unit: str = "it"
    postfix: str = ""
    leave: bool = True
    closed: bool = False
    kind: ClassVar[str] = "progress"


@dataclass(frozen=True)
class Yield(Event):
    """One item yielded by a called generator, sent as soon as it is produced: ``value`` holds one name, ``item``."""

    value: PackedValues
    kind: ClassVar[str] = "yield"


@dataclass(frozen=True)
class Result(Event):
    """The run succeeded. ``outputs`` are the names to assign (modules as ModuleRef); ``unsendable`` maps names
    that could not travel back to the reason; ``trailing`` holds the value of a trailing expression (name
    ``"_"``, None when it cannot travel), ``trailing_bundle`` and ``trailing_metadata`` how the worker displays it
    (formatted there, under the worker's library display options: the kernel shows this, not its own rendering)."""

    outputs: PackedValues
    unsendable: dict[str, str]
    deleted: tuple[str, ...]
    trailing: PackedValues | None = None
    trailing_bundle: dict[str, Any] | None = None
    trailing_metadata: dict[str, Any] | None = None
    dirty: str | None = None  # why the worker should not be reused, if it should not
    settings: dict[str, Any] = field(default_factory=dict)  # library settings the cell changed (library_settings)
    kind: ClassVar[str] = "result"
    terminal: ClassVar[bool] = True


@dataclass(frozen=True)
class Error(Event):
    """The run failed remotely: the cell raised, or the job could not be set up."""

    type_module: str
    type_qualname: str
    message: str
    traceback: str
    exception: PackedValues | None = None
    dirty: str | None = None
    kind: ClassVar[str] = "error"
    terminal: ClassVar[bool] = True

    @property
    def type_name(self) -> str:
        if self.type_module in ("builtins", ""):
            return self.type_qualname
        return f"{self.type_module}.{self.type_qualname}"


@dataclass(frozen=True)
class WorkerExited(Event):
    """Made by the backend, not the worker: the worker process died before sending a terminal event."""

    returncode: int | None
    log_tail: str = ""
    kind: ClassVar[str] = "worker_exited"
    terminal: ClassVar[bool] = True


@dataclass(frozen=True)
class Cancelled(Event):
    """Made by the backend: the run was cancelled before the worker reported a terminal event."""

    reason: str = "cancelled"
    kind: ClassVar[str] = "cancelled"
    terminal: ClassVar[bool] = True


def dumps(obj: Any) -> tuple[bytes, list[Any]]:
    """Plain pickle (protocol 5) of wire data, with PickleBuffers kept out-of-band."""
    buffers: list[pickle.PickleBuffer] = []
    body = pickle.dumps(obj, protocol=PICKLE_PROTOCOL, buffer_callback=buffers.append)
    return body, [_raw(b) for b in buffers]


def loads(body: Any, buffers: Iterable[Any]) -> Any:
    return pickle.loads(body, buffers=list(buffers))


def encode_events(events: Sequence[Event]) -> list[Any]:
    body, buffers = dumps(list(events))
    return [body, *buffers]


def decode_events(frames: Sequence[Any]) -> list[Event]:
    return loads(frames[0], frames[1:])
