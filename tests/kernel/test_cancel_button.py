"""The panel's Cancel button, clicked the way JupyterLab ≥ 4.4 delivers it: a comm message over a kernel subshell
while the cell is still running on the main shell."""

from __future__ import annotations


from .conftest import LiveKernel


def _button_comm_id(kernel: LiveKernel, msg_id: str, timeout: float = 20) -> str:
    """The comm id of the ButtonModel the running cell opened (its run panel), once the panel is displayed, as a
    user sees it: a click sent as soon as the button's comm opened could reach the kernel before the panel had set
    up the button's routing by subshell, and wait for the busy main shell (a flake seen about one run in four)."""
    button = None
    for msg in kernel.messages(msg_id, timeout):
        state = msg["content"].get("data", {}).get("state", {}) if msg["msg_type"] == "comm_open" else {}
        if state.get("_model_name") == "ButtonModel":
            button = msg["content"]["comm_id"]
        elif button is not None and msg["msg_type"] == "display_data":
            return button
    raise TimeoutError("the run panel with its Cancel button was never displayed")


def _create_subshell(kernel: LiveKernel) -> str:
    request = kernel.client.session.msg("create_subshell_request", {})
    kernel.client.control_channel.send(request)
    reply = kernel.client.get_control_msg(timeout=10)
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]["subshell_id"]


def _click_over_subshell(kernel: LiveKernel, comm_id: str, subshell_id: str) -> None:
    msg = kernel.client.session.msg("comm_msg", {"comm_id": comm_id,
                                                 "data": {"method": "custom", "content": {"event": "click"}}})
    msg["header"]["subshell_id"] = subshell_id
    kernel.client.shell_channel.send(msg)


def test_cancel_button_over_a_subshell_stops_the_running_cell(live_kernel) -> None:
    kernel = live_kernel()
    subshell = _create_subshell(kernel)
    msg_id = kernel.submit("%%thither\nimport time\nkept = 1\ntime.sleep(60)")
    comm_id = _button_comm_id(kernel, msg_id)  # the panel appears once the run outlives 0.5 s
    _click_over_subshell(kernel, comm_id, subshell)
    result = kernel.collect(msg_id, timeout=20)
    assert result.error is not None and result.error["ename"] == "RunCancelled", result.outputs
    assert "kept" not in kernel.run("print(sorted(globals()))").stdout
