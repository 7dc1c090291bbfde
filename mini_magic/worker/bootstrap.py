"""The set-up every remote entry point shares: one call turns a transport into a ready Worker.

A worker process, whatever started it (``python -m mini_magic.worker`` for the local backend, :mod:`.modal` in a
Modal container, a future Ray or SSH entry point), needs the same things once for its life: one event sender (the
worker's single exit, where the scrubber masks secret values), the file-descriptor capture of stdout/stderr, the
display bridge (IPython's display machinery when IPython is installed, a fallback ``display`` otherwise), and the tqdm
mirror. An entry point only says how events leave the process (``send``) and where the process's own log goes
(``log_fd``); everything else is here, so a new backend's worker side is its transport and nothing more.
Standard library and cloudpickle only.
"""

from __future__ import annotations

from collections.abc import Callable

from ..scrub import Scrubber
from ..wire import Event
from . import context, display, tqdm_mirror
from .output import EventSender, OutputCapture
from .runner import Worker


def start_worker(send: Callable[[list[Event]], None], scrubber: Scrubber, log_fd: int,
                 read_fds: tuple[int, int] | None = None) -> Worker:
    """A Worker whose events go to ``send`` (see :meth:`EventSender.connect` to change it per run) and whose
    process output is captured; ``read_fds`` are the kernel's ends of the pipes behind fds 1 and 2, when it keeps
    them (see OutputCapture). Call once per process: the capture and the hooks are process-wide."""
    context.mark_worker_process()
    sender = EventSender(send, scrubber)
    capture = OutputCapture(sender, log_fd, read_fds)
    worker = Worker(sender, capture)
    worker.display = display.install(sender.emit, worker.sync_output)
    tqdm_mirror.install()
    return worker
