"""Worker side: what ``!cmd`` and ``x = !cmd`` need, without IPython, behaving as they do in the kernel.

IPython's ``transform_cell`` turns ``!ls {path}`` into ``get_ipython().system('ls {path}')`` and ``x = !cmd`` into
``x = get_ipython().getoutput('cmd')``. The worker may run in an image without IPython, so the cell namespace gets
this small stand-in whose ``system``/``getoutput`` expand ``{expr}`` and ``$name`` from the caller's namespace the way
IPython does and run the command the way ipykernel does on posix (IPython 8.12 to 9.x, ipykernel 7.1 to 7.4):

- ``!cmd`` runs ``$SHELL -c cmd`` on a pseudo-terminal (IPython uses pexpect): the command sees a terminal of
  24x80 as its stdin, stdout and stderr and as its controlling terminal, so stderr arrives merged into stdout in the
  order it was written, with the terminal's ``\\r\\n`` line ends, and all of it lands on ``sys.stdout``. The exit
  status goes to ``_exit_code`` in the cell's namespace: the code, or minus the signal for a command killed by one
  (a shell's ``128 + n`` counts as signal ``n``).
- ``x = !cmd`` runs the same shell on pipes, stdin closed at once, stderr merged into stdout; the output's lines
  come back as an ``SList`` and ``_exit_code`` is left alone.
- A command ending in ``&`` is refused with ``OSError``, as IPython refuses it.

The shell is IPython's: ``$SHELL`` as the worker sees it, else ``sh``, looked up on PATH. A local worker inherits
the kernel's environment, so it is exactly the kernel's shell (``sh``, often dash, where the kernel has no
``$SHELL``, as in many containers and CI jobs). A Modal container has no login shell: its entry point
(:mod:`.modal`) sets ``$SHELL`` to ``bash`` there when the image has bash, what ``$SHELL`` is on nearly every Linux
Jupyter. ipykernel's environment for commands (``PAGER=cat`` and its colour settings) is added where the worker's
environment does not set those variables, so that e.g. ``!git log`` does not wait in a pager.

An interrupt ends the command as ipykernel does (a ``^C`` typed on its terminal, what it prints in the next 0.2 s
is shown, then it is killed) and then, unlike in the kernel, ends the cell: the kernel stops the run.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import re
import select
import shutil
import signal
import string
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Mapping
from typing import Any

# What ipykernel's ZMQInteractiveShell.init_environment puts in the kernel's environment (and so in every command's).
KERNEL_ENVIRONMENT = {
    "TERM": "xterm-color",
    "CLICOLOR": "1",
    "FORCE_COLOR": "1",
    "CLICOLOR_FORCE": "1",
    "PAGER": "cat",
    "GIT_PAGER": "cat",
}
TERMINAL_SIZE = (24, 80)  # pexpect's default (rows, columns)
INTERRUPT_GRACE = 0.2  # IPython's ProcessHandler.terminate_timeout

# Run in a fresh session by Popen, on the terminal: make it the controlling terminal (so the shell's end hangs it
# up, and ^C reaches the command's process group, as with pexpect), then become the shell. A trampoline because
# Popen cannot do it and fork() in the threaded worker is unsafe; -I -S keep its start-up to a few milliseconds.
_TAKE_TERMINAL = (
    "import fcntl, os, sys, termios\n"
    "try:\n"
    "    fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "except (AttributeError, OSError):\n"
    "    pass\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


class SList(list):
    """The list of output lines ``x = !cmd`` gives; ``.s``, ``.n`` and ``.l`` as in IPython.

    In the kernel it arrives as IPython's own ``SList`` (with ``grep``, ``fields``...), as a normal cell gives."""

    @property
    def s(self) -> str:
        return " ".join(self)

    @property
    def n(self) -> str:
        return "\n".join(self)

    @property
    def l(self) -> list[str]:  # noqa: E743 - IPython's name
        return list(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_slist, (list(self),))


def _slist(lines: list[str]) -> list[str]:
    """IPython's SList where IPython is installed (the kernel), else ours."""
    try:
        from IPython.utils.text import SList as IPythonSList
    except ImportError:
        return SList(lines)
    return IPythonSList(lines)


# IPython's DollarFormatter rule: ``$name`` or ``$a.b`` outside single quotes is a field, ``$$name`` a literal ``$name``.
_DOLLAR = re.compile(r"(.*?)\$(\$?[\w\.]+)(?=([^']*'[^']*')*[^']*$)")


class _ShellFormatter(string.Formatter):
    """Finds the ``{expr}`` and ``$name`` fields of a command, in order, as IPython's DollarFormatter does."""

    def parse(self, format_string: str) -> Any:
        for literal, field, spec, conversion in super().parse(format_string):
            kept, end = "", 0
            for match in _DOLLAR.finditer(literal):
                before, name = match.group(1, 2)
                if name.startswith("$"):
                    kept += before + name
                else:
                    yield kept + before, name, "", None
                    kept = ""
                end = match.end()
            yield kept + literal[end:], field, spec, conversion


_FORMATTER = _ShellFormatter()


def expand(command: str, namespace: dict[str, Any]) -> str:
    """Expand like IPython's ``var_expand``: every field is evaluated as a Python expression (``{x[1:3]}`` too: the
    text after a colon belongs to the expression); on any failure the command is used as written."""
    parts = []
    try:
        for literal, field, spec, conversion in _FORMATTER.parse(command):
            parts.append(literal)
            if field is not None:
                value = eval(f"{field}:{spec}" if spec else field, dict(namespace))  # noqa: S307 - the user's cell
                parts.append(format(_FORMATTER.convert_field(value, conversion), ""))
    except Exception:  # noqa: BLE001 - IPython also falls back to the raw text
        return command
    return "".join(parts)


def _caller_frame(depth: int = 2) -> Any:
    return sys._getframe(depth)


def _namespace_of(frame: Any) -> dict[str, Any]:
    return {**frame.f_globals, **frame.f_locals}


def shell_path(environ: Mapping[str, str] | None = None) -> str:
    """The shell commands run in, as IPython picks it: ``$SHELL``, else ``sh``, looked up on PATH."""
    environ = os.environ if environ is None else environ
    name = environ.get("SHELL", "sh")
    found = shutil.which(name, path=environ.get("PATH") or os.defpath)
    if found is None:
        raise OSError(f'"{name}" shell not found')  # IPython's message
    return found


def default_login_shell(environ: dict[str, str] | None = None) -> None:
    """Where no ``$SHELL`` is set (a Modal container), make it bash when there is one: commands then get the
    shell they get in a Linux Jupyter rather than the image's bare ``sh``."""
    environ = os.environ if environ is None else environ
    if "SHELL" not in environ:
        bash = shutil.which("bash", path=environ.get("PATH") or os.defpath)
        if bash:
            environ["SHELL"] = bash


def command_environment() -> dict[str, str]:
    return {**KERNEL_ENVIRONMENT, **os.environ}


def exit_code(returncode: int) -> int:
    """IPython's convention: minus the signal for a command a signal ended, also when its shell reported 128 + n."""
    return -(returncode - 128) if returncode > 128 else returncode


def _refuse_background(command: str) -> None:
    if command.rstrip().endswith("&"):
        # IPython's check and message, word for word.
        raise OSError("Background processes not supported.")


def run_on_terminal(command: str) -> int:
    """Run ``command`` on a new pseudo-terminal, copying what it writes to ``sys.stdout`` as it comes; its exit
    status. An interrupt types ^C on the terminal, shows what follows for a moment, kills the command's process
    group and is raised again."""
    shell = shell_path()
    master, slave = os.openpty()
    try:
        rows, columns = TERMINAL_SIZE
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        proc = subprocess.Popen(  # noqa: S603 - running the user's command is the point
            [sys.executable, "-I", "-S", "-c", _TAKE_TERMINAL, shell, "-c", command],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=command_environment(),
            start_new_session=True,
            close_fds=True,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)  # only the command holds the terminal now: its end is the master's end of file
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        try:
            while _copy(master, decoder):
                pass
            return proc.wait()
        except KeyboardInterrupt:
            _interrupt(proc, master, decoder)
            raise
    finally:
        os.close(master)


def _copy(master: int, decoder: codecs.IncrementalDecoder) -> bool:
    """Copy one chunk of the command's output; False at its end (EIO on Linux once no process holds the terminal)."""
    try:
        data = os.read(master, 65536)
    except OSError:
        data = b""
    text = decoder.decode(data, final=not data)
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()
    return bool(data)


def _interrupt(proc: subprocess.Popen[bytes], master: int, decoder: codecs.IncrementalDecoder) -> None:
    try:
        os.write(master, b"\x03")
        deadline = time.monotonic() + INTERRUPT_GRACE
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([master], [], [], left)[0] or not _copy(master, decoder):
                break
    except (OSError, KeyboardInterrupt):
        pass
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()


class WorkerShell:
    """The object a thither cell gets from ``get_ipython()`` in the worker."""

    def get_ipython(self) -> WorkerShell:
        """What the transformed cell calls: ``get_ipython().system(...)``."""
        return self

    def system(self, command: str) -> None:
        _refuse_background(command)
        frame = _caller_frame()
        command = expand(command, _namespace_of(frame))
        sys.stdout.flush()
        sys.stderr.flush()
        frame.f_globals["_exit_code"] = exit_code(run_on_terminal(command))

    def getoutput(self, command: str, split: bool = True) -> SList | str:
        _refuse_background(command)
        command = expand(command, _namespace_of(_caller_frame()))
        sys.stdout.flush()
        sys.stderr.flush()
        completed = subprocess.run(  # noqa: S602 - running the user's command is the point
            command,
            shell=True,
            executable=shell_path(),
            env=command_environment(),
            check=False,
            input=b"",  # stdin a pipe closed at once, as IPython's communicate() leaves it
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output = completed.stdout.decode("utf-8", "replace")
        return SList(output.splitlines()) if split else output

    def run_line_magic(self, name: str, line: str, *args: Any) -> Any:
        raise RuntimeError(f"%{name} cannot run inside a %%thither cell: the worker has no IPython magics")

    def run_cell_magic(self, name: str, line: str, cell: str) -> Any:
        raise RuntimeError(f"%%{name} cannot run inside a %%thither cell: the worker has no IPython magics")
