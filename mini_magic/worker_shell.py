"""Worker side: what ``!cmd`` and ``x = !cmd`` need, without IPython.

IPython's ``transform_cell`` turns ``!ls {path}`` into ``get_ipython().system('ls {path}')`` and ``x = !cmd`` into
``x = get_ipython().getoutput('cmd')``. The worker may run in an image without IPython, so the cell namespace gets
this small stand-in whose ``system``/``getoutput`` expand ``{expr}`` and ``$name`` from the caller's namespace the way
IPython does, and run the command with the worker's (captured) stdout and stderr.
"""

from __future__ import annotations

import re
import string
import subprocess
import sys
from typing import Any


class SList(list):
    """The list of output lines ``x = !cmd`` gives; ``.s``, ``.n`` and ``.l`` as in IPython."""

    @property
    def s(self) -> str:
        return " ".join(self)

    @property
    def n(self) -> str:
        return "\n".join(self)

    @property
    def l(self) -> list[str]:  # noqa: E743 - IPython's name
        return list(self)


class _EvalFormatter(string.Formatter):
    """``{expr}`` fields are evaluated in the namespace (IPython allows expressions, not only names)."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        return eval(field_name, self.namespace), field_name  # noqa: S307 - the user's own cell text


_DOLLAR = re.compile(r"\$\$|\$\{?([A-Za-z_][A-Za-z_0-9]*)\}?")


def expand(command: str, namespace: dict[str, Any]) -> str:
    """Expand like IPython's ``var_expand``: on any failure the command is used as written."""

    def dollar(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return str(namespace[name]) if name in namespace else match.group(0)

    try:
        command = _EvalFormatter(namespace).format(command)
    except Exception:  # noqa: BLE001 - IPython also falls back to the raw text
        pass
    return _DOLLAR.sub(dollar, command)


def _caller_namespace(depth: int = 2) -> dict[str, Any]:
    frame = sys._getframe(depth)
    return {**frame.f_globals, **frame.f_locals}


class WorkerShell:
    """The object a thither cell gets from ``get_ipython()`` in the worker."""

    def __init__(self) -> None:
        self.last_exit_code = 0

    def get_ipython(self) -> WorkerShell:
        """What the transformed cell calls: ``get_ipython().system(...)``."""
        return self

    def system(self, command: str) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        completed = subprocess.run(expand(command, _caller_namespace()), shell=True, check=False)  # noqa: S602
        self.last_exit_code = completed.returncode

    def getoutput(self, command: str, split: bool = True) -> SList | str:
        completed = subprocess.run(  # noqa: S602 - running the user's command is the point
            expand(command, _caller_namespace()),
            shell=True,
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self.last_exit_code = completed.returncode
        return SList(completed.stdout.splitlines()) if split else completed.stdout

    def run_line_magic(self, name: str, line: str, *args: Any) -> Any:
        raise RuntimeError(f"%{name} cannot run inside a %%thither cell: the worker has no IPython magics")

    def run_cell_magic(self, name: str, line: str, cell: str) -> Any:
        raise RuntimeError(f"%%{name} cannot run inside a %%thither cell: the worker has no IPython magics")
