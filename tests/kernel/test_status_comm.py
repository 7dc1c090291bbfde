"""The `mini_magic` comm as a frontend sees it: a snapshot on open, live run events, and Cancel with an
acknowledgement — also while a cell runs, when the Cancel comes over a kernel subshell (JupyterLab ≥ 4.4)."""

from __future__ import annotations

import uuid

from .conftest import LiveKernel
from .test_cancel_button import _create_subshell


def _comm_messages(kernel: LiveKernel, comm_id: str, until, timeout: float = 30) -> list[dict]:
    """Collect the comm's messages from iopub until ``until(messages)`` is true."""
    seen: list[dict] = []
    for msg in kernel.iopub(timeout):
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id:
            seen.append(msg["content"]["data"])
            if until(seen):
                return seen
    raise TimeoutError(f"comm messages so far: {seen}")


def _until_idle_and(kernel: LiveKernel, msg_id: str, done, timeout: float = 30) -> list[dict]:
    """Every iopub message until the cell ``msg_id`` went idle and ``done(messages)`` holds. Run events are sent
    up to status.COALESCE after they happen, so they may come after the cell's idle: one reader for both."""
    seen: list[dict] = []
    idle = False
    for msg in kernel.iopub(timeout):
        seen.append(msg)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status":
            idle = idle or msg["content"]["execution_state"] == "idle"
        if idle and done(seen):
            return seen
    raise TimeoutError(f"idle: {idle}; messages so far: {seen}")


def _finished_on(comm_id: str):
    return lambda messages: any(d.get("event") == "finished" for d in _data_by_comm(messages, [comm_id])[comm_id])


def _run_events(kernel: LiveKernel, comm_id: str, msg_id: str, timeout: float = 30) -> list[dict]:
    """The comm's messages until the cell ``msg_id`` went idle and its run's ``finished`` event came."""
    return _data_by_comm(_until_idle_and(kernel, msg_id, _finished_on(comm_id), timeout), [comm_id])[comm_id]


def _open(kernel: LiveKernel) -> str:
    comm_id = uuid.uuid4().hex
    kernel.client.shell_channel.send(kernel.client.session.msg(
        "comm_open", {"comm_id": comm_id, "target_name": "mini_magic", "data": {}}))
    return comm_id


def _send(kernel: LiveKernel, comm_id: str, data: dict, subshell: str | None = None) -> None:
    msg = kernel.client.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
    if subshell:
        msg["header"]["subshell_id"] = subshell
    kernel.client.shell_channel.send(msg)


def test_snapshot_events_and_cancel_over_a_subshell(live_kernel) -> None:
    kernel = live_kernel()
    assert kernel.run("%%thither\nearlier = 1").error is None
    comm_id = _open(kernel)
    (snapshot,) = _comm_messages(kernel, comm_id, lambda m: any(x["type"] == "snapshot" for x in m))
    assert snapshot["protocol"] == 1 and snapshot["runs"][0]["state"] == "done"

    # A fast cell: its events come coalesced (only the newest state of a run within status.COALESCE is sent; on a
    # slow machine the cell may outlast one such window, and its creation is sent before its end).
    msg_id = kernel.submit("%%thither\nvalue = 42")
    events = _run_events(kernel, comm_id, msg_id)
    assert [e["event"] for e in events] in (["finished"], ["created", "finished"]), events
    finished = events[-1]["run"]
    assert finished["msg_id"] == msg_id and finished["backend"] == "local"
    assert finished["state"] == "done" and finished["outputs"] == ["value"] and finished["elapsed"] >= 0

    # A slower one: every state it spends time in is seen, in order.
    msg_id = kernel.submit("%%thither\nimport time\ntime.sleep(0.5)\nvalue = 43")
    events = _run_events(kernel, comm_id, msg_id)
    assert [e["event"] for e in events] == ["started", "finished"], events
    assert events[0]["run"]["msg_id"] == msg_id and events[0]["run"]["state"] == "running"

    subshell = _create_subshell(kernel)
    msg_id = kernel.submit("%%thither\nimport time\nprint('sleeping', flush=True)\ntime.sleep(60)")
    started = _comm_messages(kernel, comm_id, lambda m: any(x.get("event") == "started" for x in m))
    run_id = started[-1]["run"]["run_id"]
    _send(kernel, comm_id, {"type": "cancel", "run_id": run_id, "request_id": "r1"}, subshell)
    acks = _comm_messages(kernel, comm_id, lambda m: any(x["type"] == "cancel_ack" for x in m), timeout=15)
    ack = next(x for x in acks if x["type"] == "cancel_ack")
    assert ack == {"type": "cancel_ack", "run_id": run_id, "request_id": "r1", "delivered": True}
    # One reader for everything: the cell's error may come before or after the ack (it is sent from the subshell).
    ended = acks if any(x.get("event") == "finished" for x in acks) else _comm_messages(
        kernel, comm_id, lambda m: any(x.get("event") == "finished" for x in m))
    finished = next(x["run"] for x in ended if x.get("event") == "finished")
    assert finished["state"] == "cancelled" and "cancelled" in finished["error"], finished

    _send(kernel, comm_id, {"type": "cancel", "run_id": "no-such-run", "request_id": "r2"})
    acks = _comm_messages(kernel, comm_id, lambda m: any(x.get("request_id") == "r2" for x in m))
    assert acks[-1]["delivered"] is False


def test_the_comm_target_is_removed_on_unload(live_kernel) -> None:
    kernel = live_kernel()
    assert kernel.run("%unload_ext mini_magic").error is None
    code = "import comm\nprint('mini_magic' in comm.get_comm_manager().targets)"
    assert kernel.run(code).stdout == "False\n"
    assert kernel.run("%load_ext mini_magic").error is None
    assert kernel.run(code).stdout == "True\n"


def test_load_ext_opens_the_comm_itself_for_frontends_already_connected(live_kernel) -> None:
    kernel = live_kernel(load=False)
    kernel.submit("%load_ext mini_magic")
    opened = next((m for m in kernel.iopub(30)
                   if m["msg_type"] == "comm_open" and m["content"]["target_name"] == "mini_magic"), None)
    assert opened is not None, "%load_ext opened no mini_magic comm"
    comm_id = opened["content"]["comm_id"]
    assert opened["content"]["data"]["type"] == "snapshot" and opened["content"]["data"]["runs"] == []

    msg_id = kernel.submit("%%thither\nimport time\nfrom tqdm.auto import tqdm\n"
                           "for _ in tqdm(range(3), desc='steps'):\n    time.sleep(0.6)")
    events = _run_events(kernel, comm_id, msg_id)
    finished = events[-1]["run"]
    assert finished["execution_count"] == 2 and finished["background"] is False
    assert finished["progress"] == {"n": 3, "total": 3, "desc": "steps"}, finished
    assert any(e["event"] == "updated" and e["run"]["progress"] for e in events)

    # The frontend's Cancel works on the comm the kernel opened, like on one the frontend opened.
    _send(kernel, comm_id, {"type": "cancel", "run_id": "nothing", "request_id": "r1"})
    acks = _comm_messages(kernel, comm_id, lambda m: any(x.get("request_id") == "r1" for x in m))
    assert acks[-1]["delivered"] is False


def test_background_runs_are_marked_so_frontends_never_interrupt_for_them(live_kernel) -> None:
    kernel = live_kernel()
    comm_id = _open(kernel)
    _comm_messages(kernel, comm_id, lambda m: any(x["type"] == "snapshot" for x in m))
    msg_id = kernel.submit("%%thither --bg --name job\nx = 1")
    events = _comm_messages(kernel, comm_id, lambda m: any(x.get("event") == "finished" for x in m))
    assert events[0]["run"]["background"] is True and events[0]["run"]["msg_id"] == msg_id
    assert events[-1]["run"]["state"] == "done"


def test_a_reloaded_tab_replaces_its_old_comm_silently_and_unload_says_closing(live_kernel) -> None:
    kernel = live_kernel()
    old, new, other = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    for comm_id, tab in ((old, "tab-1"), (new, "tab-1"), (other, "tab-2")):
        kernel.client.shell_channel.send(kernel.client.session.msg(
            "comm_open", {"comm_id": comm_id, "target_name": "mini_magic", "data": {"frontend_id": tab}}))
    _comm_messages(kernel, other, lambda m: any(x["type"] == "snapshot" for x in m))
    during_run = _until_idle_and(kernel, kernel.submit("%%thither\nx = 1"),
                                 lambda m: _finished_on(new)(m) and _finished_on(other)(m))
    seen = _data_by_comm(during_run, (old, new, other))
    assert seen[old] == [] and any(d.get("event") == "finished" for d in seen[new]) \
        and any(d.get("event") == "finished" for d in seen[other]), seen
    # The old comm was dropped without a comm_close, which every other page would log.
    assert [m for m in during_run if m["msg_type"] == "comm_close"] == []

    at_unload = kernel.until_idle(kernel.submit("%unload_ext mini_magic"))
    assert _data_by_comm(at_unload, (old, new, other)) == {old: [], new: [{"type": "closing"}],
                                                            other: [{"type": "closing"}]}
    assert [m for m in at_unload if m["msg_type"] == "comm_close"] == []


def _data_by_comm(messages: list[dict], comm_ids) -> dict[str, list]:
    """The data of the comm_msg messages sent on each of ``comm_ids``, in order."""
    return {c: [m["content"]["data"] for m in messages
                if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == c] for c in comm_ids}
