"""A run's options: a flag declared by another backend than the one the cell runs on is refused, naming it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mini_magic.errors import ThitherUsageError
from mini_magic.options import DEFAULT_TIMEOUT, RunOptions, build_parser, run_options

CONFIG = SimpleNamespace(backend="local", gpu=None, timeout=DEFAULT_TIMEOUT, env={})


def options(line: str) -> RunOptions:
    parser = build_parser()
    return run_options(parser.parse_argstring(line), CONFIG, parser.backend_flags)


def test_every_backend_flag_knows_its_backend() -> None:
    flags = {owner.flag: owner.backend for owner in build_parser().backend_flags.values()}
    assert {"--pip", "--cpu", "--memory", "--image", "--detach"} <= set(flags)
    assert {flags[f] for f in ("--pip", "--cpu", "--memory", "--image", "--detach")} == {"modal"}


@pytest.mark.parametrize("flags", ["--pip torch", "--cpu 8", "--memory 1024", "--image img", "--detach",
                                   "--pip torch --cpu 8 --image img"])
def test_a_modal_flag_on_the_local_backend_is_refused(flags: str) -> None:
    with pytest.raises(ThitherUsageError) as raised:
        options(f"--backend local {flags}")
    message = str(raised.value)
    named = [word for word in flags.split() if word.startswith("--")]
    assert all(flag in message for flag in named) and "'modal'" in message and "'local'" in message, message
    assert "--backend modal" in message  # the fix


def test_the_default_backend_refuses_them_too() -> None:
    with pytest.raises(ThitherUsageError, match="--cpu is an option of the 'modal' backend"):
        options("--cpu 2")


def test_the_backend_that_declares_a_flag_gets_it() -> None:
    chosen = options("--backend modal --pip torch --pip numpy --cpu 8 --image img --detach")
    assert chosen.extra == {"cpu": 8.0, "pip": ["torch", "numpy"], "image": "img", "detach": True}
    assert options("--backend local --gpu L4").extra == {"detach": False}  # flags left at their default pass
