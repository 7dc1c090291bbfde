"""Unit tests for mini_magic.scrub: exact values masked in text, streams, event fields and pickled data."""

from __future__ import annotations

import numpy as np
import pytest

from mini_magic import wire
from mini_magic.scrub import MASK, MIN_LENGTH, Scrubber

VALUE = "hunter2-very-secret"


def test_every_occurrence_is_masked_and_other_text_kept() -> None:
    scrubber = Scrubber([VALUE])
    assert scrubber.scrub(f"a {VALUE} b {VALUE}{VALUE}\n") == f"a {MASK} b {MASK}\n"
    assert scrubber.scrub("nothing here") == "nothing here"


def test_a_longer_value_containing_a_shorter_one_is_masked_whole() -> None:
    scrubber = Scrubber(["secret-value", "secret-value-long"])
    assert scrubber.scrub("x secret-value-long y secret-value z") == f"x {MASK} y {MASK} z"


def test_overlapping_values_leave_no_piece_of_either() -> None:
    scrubber = Scrubber(["abcdefXY", "XYzzzzzz"])
    assert scrubber.scrub("--abcdefXYzzzzzz--") == f"--{MASK}--"


def test_values_too_short_to_scrub_are_reported_not_scrubbed() -> None:
    environ = {"PIN": "1234", "TOKEN": VALUE, "EMPTY": ""}
    scrubber = Scrubber()
    assert scrubber.add_keys(["PIN", "TOKEN", "EMPTY", "ABSENT"], environ) == ["PIN"]
    assert len("1234") < MIN_LENGTH and scrubber.values == (VALUE,)
    assert scrubber.scrub(f"pin 1234 token {VALUE}") == f"pin 1234 token {MASK}"


def test_values_are_only_ever_added() -> None:
    scrubber = Scrubber.from_environ(["A"], {"A": "first-value"})
    scrubber.add_keys(["B"], {"B": "second-value"})
    assert scrubber.scrub("first-value second-value") == f"{MASK} {MASK}"


@pytest.mark.parametrize("cut", range(1, len(VALUE)))
def test_a_value_split_across_two_chunks_of_a_stream_is_masked(cut: int) -> None:
    stream = Scrubber([VALUE]).stream()
    text = stream.feed("before " + VALUE[:cut]) + stream.feed(VALUE[cut:] + " after") + stream.flush()
    assert text == f"before {MASK} after"


def test_a_value_split_over_many_chunks_is_masked() -> None:
    stream = Scrubber([VALUE]).stream()
    text = "".join(stream.feed(c) for c in f"<{VALUE}>") + stream.flush()
    assert text == f"<{MASK}>"


def test_overlapping_values_across_chunks() -> None:
    stream = Scrubber(["abcdefXY", "XYzzzzzz"]).stream()
    text = stream.feed("--abcdefXY") + stream.flush()  # the second value never follows
    assert text == f"--{MASK}"
    text = stream.feed("--abcdefXY") + stream.feed("zzzzzz--") + stream.flush()
    assert text == f"--{MASK}--"


def test_a_held_tail_that_is_not_a_value_is_passed_on_unchanged() -> None:
    stream = Scrubber([VALUE]).stream()
    assert stream.feed("prompt: hunt") == "prompt: "
    assert stream.holding
    assert stream.flush() == "hunt" and not stream.holding
    assert stream.feed("hunt") + stream.feed("ing season") + stream.flush() == "hunting season"


def test_an_empty_scrubber_passes_everything_through() -> None:
    scrubber = Scrubber()
    stream = scrubber.stream()
    assert not scrubber and stream.feed("abc") == "abc" and stream.flush() == ""
    assert scrubber.scrub_fields({"a": ["x"]}) == {"a": ["x"]} and not scrubber.contains(VALUE)


def test_event_fields_are_scrubbed_however_nested() -> None:
    scrubber = Scrubber([VALUE])
    bundle = {"text/plain": f"'{VALUE}'", "application/json": {"k": [VALUE, 1]}, "n": 3}
    assert scrubber.scrub_fields(bundle) == {"text/plain": f"'{MASK}'", "application/json": {"k": [MASK, 1]}, "n": 3}


def test_values_are_found_in_pickles_and_their_out_of_band_buffers() -> None:
    scrubber = Scrubber([VALUE])
    in_band, _ = wire.pack_values({"x": {"token": VALUE}})
    array = np.frombuffer(b"\0" * (2 * 2**20 - 5) + VALUE.encode(), dtype=np.uint8).copy()
    out_of_band, _ = wire.pack_values({"a": array})
    clean, _ = wire.pack_values({"a": np.zeros(1000)})
    # (the value straddles two of the windows a large buffer is searched in)
    assert out_of_band.buffers and VALUE.encode() not in out_of_band.data
    assert scrubber.contains(in_band.data, *in_band.buffers)
    assert scrubber.contains(out_of_band.data, *out_of_band.buffers)
    assert not scrubber.contains(clean.data, *clean.buffers)
    assert scrubber.contains({"text/plain": f"'{VALUE}'"}) and not scrubber.contains(None)


def test_a_packed_value_holding_a_secret_is_found_in_its_pickle_or_its_buffers() -> None:
    """One check for everything pickled in the worker (results, exceptions, hither call arguments)."""
    scrubber = Scrubber(["hunter2-token"])
    in_pickle, _ = wire.pack_values({"v": {"key": "hunter2-token"}})
    in_buffer, _ = wire.pack_values({"v": np.frombuffer(b"xx hunter2-token xx", dtype=np.uint8)})
    clean, _ = wire.pack_values({"v": [1, 2, 3]})
    assert scrubber.found_in(in_pickle) and scrubber.found_in(in_buffer)
    assert not scrubber.found_in(clean) and not Scrubber().found_in(in_pickle)
