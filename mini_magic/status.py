"""The ``mini_magic`` comm: run status for frontends (the JupyterLab status bar and runs panel) and Cancel.

Protocol (JSON, version 1)::

    frontend -> kernel   comm_open(target "mini_magic", data {"frontend_id": ...})   kernel replies with a snapshot
    kernel -> frontend   comm_open(target "mini_magic", data snapshot)   at %load_ext, for frontends already there
    kernel -> frontend   {"type": "snapshot", "protocol": 1, "kernel_id": ..., "runs": [run, ...]}
                         {"type": "run", "event": "created" | "started" | "updated" | "finished", "run": run}
    frontend -> kernel   {"type": "cancel", "run_id": ..., "request_id": ...}
    kernel -> frontend   {"type": "cancel_ack", "run_id": ..., "request_id": ..., "delivered": bool}
    frontend -> kernel   {"type": "snapshot_request"}
    kernel -> frontend   {"type": "closing"}     at %unload_ext: the kernel forgets the comm (no comm_close)

``run`` is :meth:`RunRecord.to_json` plus ``elapsed``. Events come from the run registry's observers, on whichever
thread made the transition (the main thread, a background run's drainer), and a Cancel may arrive on a kernel
subshell thread while a cell runs: every handler is thread-safe, logs with the run id and never raises.

Run events are sent by a thread of their own, at most :data:`COALESCE` seconds after they happen, and the events of
one run within that time are coalesced: only the newest is sent (a fast cell's created, started and finished make
one ``finished`` message). Sending three comm messages from the cell's own thread was most of what a warm
``%%thither`` cell cost in a kernel; a frontend needs the newest state of each run, not every step.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import comm as comm_package  # ipykernel's dependency: always there where a kernel is

from ._ipykernel import handle_comm_messages_where_they_arrive, mark_comm_closed
from .runs import RunRecord, RunRegistry
from .session import request_cancel

log = logging.getLogger("mini_magic.status")

TARGET = "mini_magic"
PROTOCOL = 1
COALESCE = 0.05  # seconds: run events are sent this long after they happen, the newest of each run only


def run_json(record: RunRecord) -> dict[str, Any]:
    return {**record.to_json(), "elapsed": record.elapsed}


class StatusChannel:
    """Every open frontend comm of this kernel, fed by the registry's observer hook."""

    def __init__(self, registry: RunRegistry, kernel_id: str | None) -> None:
        self.registry = registry
        self.kernel_id = kernel_id
        self._comms: dict[str, Any] = {}
        self._frontends: dict[str, str] = {}  # comm id -> the browser tab that opened it
        # Held while a snapshot is built and sent and while an event is sent: a new comm then never gets a run
        # event older than its snapshot, nor a snapshot older than an event it already got.
        self._lock = threading.RLock()
        self._pending: dict[str, tuple[str, RunRecord]] = {}  # run id -> its newest event not yet sent
        self._wake = threading.Event()
        self._sender: threading.Thread | None = None
        self._closed = False
        self._unsubscribe = registry.subscribe(self._on_run)

    def open(self, comm: Any, message: dict[str, Any]) -> None:
        """Comm target handler: remember the comm, answer with a snapshot.

        A tab that reloads opens a new comm and never closes the old one (JupyterLab does not close comms on
        unload); the old one of the same ``frontend_id`` is forgotten here, so events are not sent to dead pages.
        """
        try:
            data = ((message or {}).get("content") or {}).get("data") or {}
            frontend = data.get("frontend_id") if isinstance(data.get("frontend_id"), str) else None
            with self._lock:
                self._flush()  # the frontends already here get what happened before this snapshot
                if frontend:
                    for old_id in [c for c, f in self._frontends.items() if f == frontend]:
                        self._forget_silently(self._comms.get(old_id))
                    self._frontends[comm.comm_id] = frontend
                self._keep(comm)
                self._send(comm, self.snapshot())
        except Exception:  # noqa: BLE001 - a comm handler never raises into the kernel
            log.exception("opening the mini_magic status comm failed")

    def announce(self) -> None:
        """Open a comm from the kernel side, carrying a snapshot, for frontends that are already connected.

        A frontend opens its own comm when it meets a kernel, but if mini_magic was not loaded then, the kernel
        closed it; this is how the frontend learns that ``%load_ext mini_magic`` has happened since. Frontends
        without the extension ignore the comm (JupyterLab closes it at once).
        """
        try:
            with self._lock:
                self._keep(comm_package.create_comm(target_name=TARGET, data=self.snapshot()))
        except Exception:  # noqa: BLE001 - no frontend, no comm: nothing is lost
            log.debug("announcing the mini_magic status comm failed", exc_info=True)

    def _keep(self, comm: Any) -> None:
        handle_comm_messages_where_they_arrive(comm)
        comm.on_msg(lambda msg: self._on_message(comm, msg))
        comm.on_close(lambda msg: self._forget(comm))
        with self._lock:
            self._comms[comm.comm_id] = comm

    def snapshot(self) -> dict[str, Any]:
        runs = self.registry.recent(50, kernel_id=self.kernel_id)
        return {"type": "snapshot", "protocol": PROTOCOL, "kernel_id": self.kernel_id,
                "runs": [run_json(r) for r in runs]}

    def _on_message(self, comm: Any, msg: dict[str, Any]) -> None:
        data = (msg.get("content") or {}).get("data") or {}
        try:
            if data.get("type") == "cancel":
                run_id = str(data.get("run_id"))
                delivered = request_cancel(run_id)
                log.info("cancel of run %s requested by a frontend (delivered=%s)", run_id, delivered)
                self._send(comm, {"type": "cancel_ack", "run_id": run_id, "request_id": data.get("request_id"),
                                  "delivered": delivered})
            elif data.get("type") == "snapshot_request":
                with self._lock:
                    self._flush()
                    self._send(comm, self.snapshot())
        except Exception:  # noqa: BLE001 - never raise into the kernel
            log.exception("handling a mini_magic comm message failed: %r", data)

    def _on_run(self, event: str, record: RunRecord) -> None:
        with self._lock:
            if not self._comms or self._closed:
                return
            # The record is this observer's own copy (the registry never changes it): turned into JSON when sent,
            # on the sender's thread and only for the newest event of each run, not on the cell's thread.
            self._pending[record.run_id] = (event, record)
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_events, name="mini_magic-status", daemon=True)
                self._sender.start()
        self._wake.set()

    def _send_events(self) -> None:
        while not self._closed:
            self._wake.wait()
            time.sleep(COALESCE)
            self._wake.clear()
            with self._lock:
                self._flush()

    def _flush(self) -> None:  # locked
        """Send the pending run events (comm.send only queues a message for the iopub thread)."""
        pending, self._pending = self._pending, {}
        for event, record in pending.values():
            message = {"type": "run", "event": event, "run": run_json(record)}
            for comm in list(self._comms.values()):
                self._send(comm, message)

    def _send(self, comm: Any, message: dict[str, Any]) -> None:
        try:
            comm.send(message)
        except Exception:  # noqa: BLE001 - a closed frontend must not break a run
            log.warning("sending to mini_magic comm %s failed; dropping it", getattr(comm, "comm_id", "?"))
            self._forget(comm)

    def _forget(self, comm: Any) -> None:
        with self._lock:
            comm_id = str(getattr(comm, "comm_id", ""))
            self._comms.pop(comm_id, None)
            self._frontends.pop(comm_id, None)

    def _forget_silently(self, comm: Any) -> None:
        """Drop a comm without publishing comm_close: that goes to every page, and those that never knew the comm
        log an error for it. ``_closed`` keeps the comm from publishing one when it is garbage-collected."""
        if comm is None:
            return
        self._forget(comm)
        mark_comm_closed(comm)
        manager = _comm_manager()
        try:
            if manager is not None:
                manager.unregister_comm(comm)
        except Exception:  # noqa: BLE001 - already unregistered
            pass

    def close(self) -> None:
        """At ``%unload_ext``: tell each frontend its comm is gone (it drops it locally), then forget them all."""
        self._unsubscribe()
        with self._lock:
            self._flush()
            self._closed = True
            self._wake.set()
            for comm in list(self._comms.values()):
                self._send(comm, {"type": "closing"})
                self._forget_silently(comm)


def _comm_manager() -> Any:
    """The kernel's comm manager, or None where there is none (plain IPython)."""
    try:
        return comm_package.get_comm_manager()
    except Exception:  # noqa: BLE001 - no kernel, no comms
        return None


def register(shell: Any, channel: StatusChannel) -> bool:
    """Register the comm target with the kernel's comm manager (False outside a kernel)."""
    manager = _comm_manager()
    if manager is None or getattr(shell, "kernel", None) is None:
        return False
    manager.register_target(TARGET, channel.open)
    channel.announce()
    return True


def unregister(channel: StatusChannel) -> None:
    manager = _comm_manager()
    try:
        if manager is not None:
            manager.unregister_target(TARGET, channel.open)
    except Exception:  # noqa: BLE001 - nothing was registered
        pass
