"""Every touch of a private ipykernel / IPython (or argparse) API, in one file to audit on each release.

Each function names what mini_magic needs from the kernel, says which private detail provides it and what happens on
a version without it. Callers use these functions, never the private names. Importing this module imports only
the standard library.

Checked against ipykernel 7.1-7.x and IPython 8.12-9.x (the dependency bounds of pyproject.toml).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

# ``Backend.add_arguments`` receives an argument group; argparse has no public name for its type.
ArgumentGroup = argparse._ArgumentGroup


def current_execution_count(shell: Any) -> int:
    """The running cell's In[N]: IPython 9 increments the counter before the cell runs, IPython 8 after."""
    import IPython

    return shell.execution_count - 1 if IPython.version_info >= (9,) else shell.execution_count


def publish_execute_result(shell: Any, value: Any, data: dict[str, Any], metadata: dict[str, Any] | None) -> None:
    """Show ``value`` as the cell's result with the display bundle ``data`` (formatted elsewhere).

    ``Out[n]``, ``_``, ``__``, ``___`` hold ``value``. This runs the displayhook's own steps (those of
    ``DisplayHook.__call__``, the same in IPython 8.12 and 9) with ``data`` in place of the kernel's formatting, so
    the execute_result message, the prompt number, the output cache and the history are the kernel's own. Private
    detail: the step methods of ``IPython.core.displayhook.DisplayHook`` (and ipykernel's ZMQShellDisplayHook).
    """
    hook = shell.displayhook
    hook.check_for_underscore()
    if value is None or hook.quiet():
        return
    hook.start_displayhook()
    hook.write_output_prompt()
    hook.update_user_ns(value)
    hook.fill_exec_result(value)
    if data:
        hook.write_format_data(data, metadata or {})
        hook.log_output(data)
    hook.finish_displayhook()


def handle_comm_messages_where_they_arrive(comm: Any) -> None:
    """Let a comm's incoming messages be handled on the kernel subshell they arrive on.

    ipykernel ≥ 7.4 routes a comm's incoming messages to the shell that last *published* on it, so that replies
    reach the thread waiting for them. For a comm the running cell publishes on (its panel's Cancel button, the
    status comm) that is the busy main shell, and a Cancel JupyterLab sends over a subshell would wait until the
    cell ends — too late. Overriding that private routing hook (``_reply_subshell_for``) on this one comm restores
    delivery by subshell; ipykernel versions without the hook never call it, and nothing changes there.
    """
    comm._reply_subshell_for = lambda data, default: default


def mark_comm_closed(comm: Any) -> None:
    """Keep a comm from publishing ``comm_close`` when it is garbage-collected (private ``_closed`` flag of
    ``comm.base_comm.BaseComm``); without it, every page would get a close for a comm most never knew."""
    comm._closed = True


def wrap_kernel_shutdown(kernel: Any, before: Callable[[bool], None]) -> Callable[[], None]:
    """Run ``before(restart)`` when the kernel is asked to shut down, while the process still works normally;
    returns the function that undoes it. None of this exists outside a kernel: then it does nothing.

    ipykernel has no shutdown hook, so ``do_shutdown`` (a method of its Kernel) is wrapped on this kernel instance
    only; the class method shows again once the instance attribute is dropped.
    """
    original = getattr(kernel, "do_shutdown", None)
    if kernel is None or original is None:
        return lambda: None

    def do_shutdown(restart: bool) -> Any:
        before(restart)
        return original(restart)

    kernel.do_shutdown = do_shutdown
    return lambda: vars(kernel).pop("do_shutdown", None)


def wrap_display_publisher(shell: Any, publish: Callable[..., Any], clear_output: Callable[..., Any]
                           ) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Replace the shell's display publisher's ``publish`` and ``clear_output`` on the instance (IPython has no
    hook to route displays made on one thread); returns the originals, which the replacements may call."""
    publisher = shell.display_pub
    original = publisher.publish, publisher.clear_output
    publisher.publish = publish
    publisher.clear_output = clear_output
    return original


def unwrap_display_publisher(shell_or_publisher: Any) -> None:
    """Undo :func:`wrap_display_publisher`: drop the instance attributes so the class methods show again."""
    publisher = getattr(shell_or_publisher, "display_pub", shell_or_publisher)
    for name in ("publish", "clear_output"):
        publisher.__dict__.pop(name, None)
