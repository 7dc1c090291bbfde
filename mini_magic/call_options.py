"""``@thither(gpu="L4", timeout=600, ...)``: a function's options, as keywords, turned into the same
:class:`~mini_magic.options.RunOptions` a ``%%thither`` cell's flags give.

The keywords are the flags' names (``--gpu`` is ``gpu=``, a backend's ``--pip`` is ``pip=``), with the repeatable
flags taking a list (``volumes=["data:/data"]``, ``secrets=["hf"]``, ``pip=["torch"]``) and ``env`` a dict. They are
turned into flags and parsed by the very parser the magic uses, then go through the same precedence (keyword >
``%config Thither`` > environment > default) and the same checks, so an option means the same in both places and a
backend's new flag works here with no change. Unknown or meaningless keywords are refused when the function is
decorated, before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ThitherUsageError
from .options import RunOptions, run_options

# keyword -> the flag it stands for, where the names differ (the repeatable flags are singular)
_RENAMED = {"volumes": "volume", "secrets": "secret"}
# flags of a cell that mean nothing for a function call, with what to do instead
_REFUSED = {
    "out": "a function returns its value; there are no names to bring back",
    "inputs": "a function gets its arguments and its globals; pass what it needs as an argument",
    "bg": "call .spawn(...) to run it in the background",
    "name": "call .spawn(...) and keep the handle it returns",
    "detach": "detached runs are for %%thither --bg cells only",
    "guard": "give guard objects or context manager functions with guards=[...]",
}

_parser: Any = None


def parser() -> Any:
    """The ``%%thither`` parser, built once (it imports IPython's argument parser and every backend's flags)."""
    global _parser
    if _parser is None:
        from .options import build_parser

        _parser = build_parser()
    return _parser


def known_options() -> list[str]:
    flags = parser().backend_flags
    core = ["backend", "gpu", "timeout", "env", "volumes", "secrets"]
    return core + sorted(dest for dest in flags if dest not in _REFUSED)


def to_flags(options: Mapping[str, Any], owner: str) -> list[str]:
    """The ``%%thither`` flags for ``options``; a keyword that is no option is refused, naming ``owner``."""
    argv: list[str] = []
    backend_flags = parser().backend_flags
    for key, value in options.items():
        if key in _REFUSED:
            raise ThitherUsageError(f"{owner}: {key}= is not an option of a function ({_REFUSED[key]}).")
        if key not in known_options():
            raise ThitherUsageError(f"{owner}: unknown option {key}=; the options are: {', '.join(known_options())}.")
        if value is None:
            continue
        flag = "--" + _RENAMED.get(key, key)
        if key in backend_flags:
            flag = backend_flags[key].flag
        if key == "env":
            if not isinstance(value, Mapping):
                raise ThitherUsageError(f"{owner}: env= takes a dict of variables, e.g. env={{'SEED': '1'}}.")
            for name, text in value.items():
                argv += ["--env", f"{name}={text}"]
        elif key in ("volumes", "secrets", "pip"):
            items = [value] if isinstance(value, (str, tuple)) else list(value)
            for item in items:
                if key == "volumes" and isinstance(item, tuple):
                    item = ":".join(item)
                argv += [flag, str(item)]
        elif value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value)]
    return argv


def resolve(options: Mapping[str, Any], config: Any, owner: str) -> RunOptions:
    """``options`` after precedence, checked as a cell's flags are (an error names ``owner``)."""
    from IPython.core.error import UsageError

    argv = to_flags(options, owner)
    try:
        args = parser().parse_args(argv)
    except UsageError as exc:
        raise ThitherUsageError(f"{owner}: {exc}") from None
    try:
        return run_options(args, config, parser().backend_flags)
    except ThitherUsageError as exc:
        raise ThitherUsageError(f"{owner}: {exc}") from None
