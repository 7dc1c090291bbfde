"""Secret values replaced by ``********`` wherever a worker's text leaves it or is read from it.

One :class:`Scrubber` per worker, holding the values of the environment variables that carry secrets
(``--secret``), is applied at the only places where a worker's text can escape:

* the worker's single exit, for its whole life: every event it sends and everything it writes to its log (a thread
  that outlives its run prints into the log, and the log's tail is shown when that worker later crashes);
* the kernel's single entry for what it reads outside the event stream: the pipes it drains after a worker died and
  the log tail of a crash report.

Rules (README "Volumes and secrets"):

* Only exact values are recognised. A value shorter than :data:`MIN_LENGTH` characters is not scrubbed, because
  it would match ordinary words and numbers and garble unrelated output (and refuse unrelated results); the run
  says so on stderr, naming the key, never the value.
* Every occurrence of every value is masked, overlapping ones included (the union of their spans), so no piece of
  one value escapes because another matched first.
* A stream (:class:`StreamScrubber`) holds back text that ends with the beginning of a value until the next chunk
  shows whether the value follows, so a value split across two writes or two reads of a pipe is still masked.
* Pickled values (results, hither call arguments, exception objects) cannot be edited: :meth:`Scrubber.contains`
  finds a value in them and the caller refuses to send them.

Standard library only: this module runs in workers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "********"
MIN_LENGTH = 6
_SEARCH_WINDOW = 1 << 20  # bytes of a large buffer searched at a time (no full copy of a big array)


class Scrubber:
    """The secret values one worker must never let out. Values are only ever added: text of an earlier run (a
    leftover thread) may still print them. Thread-safe: readers see one consistent tuple of values."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self.values: tuple[str, ...] = ()  # longest first
        self.add(values)

    @classmethod
    def from_environ(cls, keys: Iterable[str], environ: Mapping[str, str] | None = None) -> Scrubber:
        scrubber = cls()
        scrubber.add_keys(keys, environ)
        return scrubber

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            kept = set(self.values) | {v for v in values if len(v) >= MIN_LENGTH}
            self.values = tuple(sorted(kept, key=len, reverse=True))

    def add_keys(self, keys: Iterable[str], environ: Mapping[str, str] | None = None) -> list[str]:
        """Scrub the values of these environment variables from now on; return the keys whose values are too short
        to scrub (see the module docstring), for the caller to report."""
        environ = os.environ if environ is None else environ
        values = {key: environ[key] for key in keys if environ.get(key)}
        self.add(values.values())
        return sorted(key for key, value in values.items() if len(value) < MIN_LENGTH)

    def __bool__(self) -> bool:
        return bool(self.values)

    def scrub(self, text: str) -> str:
        values = self.values
        if not any(v in text for v in values):
            return text
        return _mask(text, _spans(text, values), len(text))

    def scrub_bytes(self, data: bytes) -> str:
        """Text read raw from a pipe or a file, decoded (invalid UTF-8 replaced) and scrubbed."""
        return self.scrub(data.decode("utf-8", "replace"))

    def scrub_fields(self, value: Any) -> Any:
        """Every string in an event field (text, a traceback, a mimebundle, nested dicts and lists)."""
        if not self.values:
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self.scrub_fields(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.scrub_fields(v) for v in value)
        return value

    def contains(self, *items: Any) -> bool:
        """Whether a value occurs in any of ``items``: text, containers of text, or bytes-like data (a pickle and
        its out-of-band buffers, searched as UTF-8)."""
        values = self.values
        return bool(values) and any(_contains(item, values) for item in items)

    def found_in(self, packed: Any) -> bool:
        """Whether a packed value (a ``wire.PackedValues``: pickle data and out-of-band buffers) holds a secret. A
        pickle cannot be scrubbed, so such a value must not leave the worker (results, exceptions, hither calls)."""
        return self.contains(packed.data, *packed.buffers)

    def stream(self) -> StreamScrubber:
        return StreamScrubber(self)


class StreamScrubber:
    """One stream's text scrubbed chunk by chunk (not thread-safe: one reader owns it).

    ``feed`` returns what is safe to pass on now and holds back a tail that may be the start of a value;
    ``flush`` (when the stream pauses or must be ordered before something else) passes the held tail on, scrubbed.
    """

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrubber = scrubber
        self._held = ""

    def feed(self, text: str) -> str:
        text, self._held = self._held + text, ""
        values = self._scrubber.values
        if not values:
            return text
        spans = _spans(text, values)
        cut = _hold_from(text, values, spans)
        self._held = text[cut:]
        return _mask(text, spans, cut)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._scrubber.scrub(text) if text else ""

    @property
    def holding(self) -> bool:
        return bool(self._held)


def _spans(text: str, values: tuple[str, ...]) -> list[tuple[int, int]]:
    """Every occurrence of every value (overlaps included), merged into sorted disjoint spans."""
    found = []
    for value in values:
        start = text.find(value)
        while start != -1:
            found.append((start, start + len(value)))
            start = text.find(value, start + 1)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _mask(text: str, spans: list[tuple[int, int]], stop: int) -> str:
    """``text[:stop]`` with each span (all end at or before ``stop``) replaced by the mask."""
    parts, position = [], 0
    for start, end in spans:
        if end > stop:
            break
        parts += [text[position:start], MASK]
        position = end
    parts.append(text[position:stop])
    return "".join(parts)


def _hold_from(text: str, values: tuple[str, ...], spans: list[tuple[int, int]]) -> int:
    """Where the tail to hold back starts: the longest suffix that is a proper prefix of a value, moved back to
    the start of any span it would cut (so that a masked value is never passed on in two pieces)."""
    cut = len(text)
    for value in values:
        start = text.find(value[0], max(0, len(text) - len(value) + 1))
        while start != -1 and start < cut:
            if value.startswith(text[start:]):
                cut = start
                break
            start = text.find(value[0], start + 1)
    for start, end in reversed(spans):
        if start < cut < end:
            cut = start
    return cut


def _contains(item: Any, values: tuple[str, ...]) -> bool:
    if isinstance(item, str):
        return any(v in item for v in values)
    if isinstance(item, dict):
        return any(_contains(v, values) for v in item.values())
    if isinstance(item, (list, tuple)):
        return any(_contains(v, values) for v in item)
    try:
        view = memoryview(item).cast("B")
    except (TypeError, ValueError):
        return False
    encoded = [v.encode() for v in values]
    overlap = max(len(e) for e in encoded) - 1
    for offset in range(0, max(len(view), 1), _SEARCH_WINDOW):
        window = view[offset : offset + _SEARCH_WINDOW + overlap].tobytes()
        if any(e in window for e in encoded):
            return True
    return False
