"""Option parsing of %%thither and pure helpers of job building."""

from __future__ import annotations

import pytest

from mini_magic.errors import ThitherUsageError
from mini_magic.jobs import ends_with_semicolon
from mini_magic.outcome import describe_exit
from mini_magic.options import build_parser, parse_env, parse_in, parse_out


def test_parser_lists_every_core_option_and_the_timeout_default() -> None:
    text = build_parser().format_help()
    for flag in ("--backend", "--gpu", "--timeout", "--out", "--env"):
        assert flag in text
    assert "86400" in text


def test_env_is_repeatable() -> None:
    args = build_parser().parse_argstring("--env A=1 --env B=x=y --gpu L4 --timeout 5")
    assert parse_env(args.env, {"C": "3"}) == {"C": "3", "A": "1", "B": "x=y"}
    assert args.gpu == "L4" and args.timeout == 5.0


@pytest.mark.parametrize("bad", ["NOVALUE", "=x"])
def test_bad_env_names_the_option(bad: str) -> None:
    with pytest.raises(ThitherUsageError, match="--env expects KEY=VALUE"):
        parse_env([bad], {})


@pytest.mark.parametrize(("text", "names"), [(None, None), ("", ()), ("''", ()), ("a, b", ("a", "b"))])
def test_out_names(text, names) -> None:
    assert parse_out(text) == names


@pytest.mark.parametrize("bad", ["1x", "a,class", "a-b"])
def test_bad_out_names_are_refused(bad: str) -> None:
    with pytest.raises(ThitherUsageError, match="--out"):
        parse_out(bad)


def test_in_names_mirror_out() -> None:
    args = build_parser().parse_argstring("--in limit,expr --out r")
    assert (parse_in(args.inputs), parse_out(args.out)) == (("limit", "expr"), ("r",))
    assert parse_in(build_parser().parse_argstring("").inputs) == ()
    assert "--in" in build_parser().format_help()


@pytest.mark.parametrize("bad", ["1x", "a,class"])
def test_bad_in_names_name_the_option(bad: str) -> None:
    with pytest.raises(ThitherUsageError, match="^--in: "):
        parse_in(bad)


@pytest.mark.parametrize(
    ("source", "quiet"),
    [("x", False), ("x;", True), ("x;  # comment", True), ("x = 1;", True), ("s = ';'", False), ("", False)],
)
def test_trailing_semicolon(source: str, quiet: bool) -> None:
    assert ends_with_semicolon(source) is quiet


@pytest.mark.parametrize(
    ("code", "words"),
    [(3, "exited with code 3"), (-11, "SIGSEGV"), (-9, "out-of-memory"), (None, "could not start")],
)
def test_crash_messages_say_what_happened(code, words) -> None:
    message = describe_exit(code, "the worker could not start" if code is None else "")
    assert words in message and "Nothing was assigned" in message
