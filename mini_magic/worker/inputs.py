"""Worker side: which of a run's inputs the cell changed, and which can go back as the kernel's own objects.

A cell run in the notebook mutates the notebook's objects in place (``xs.append(1)``, ``model.fit(X)``); a cell run
remotely mutates copies. To behave the same, the worker fingerprints every input (its pickle, out-of-band buffers
included) before the cell runs and again after: an input whose fingerprint changed comes back (its name is
rebound to the changed value), an unchanged one that the results refer to (``B = A``, a list holding ``A``, the
cell's trailing ``A``) travels as a reference to the kernel's object, so ``B is A`` holds as it would.

Fingerprints cost two pickles of each input; inputs above :data:`DIGEST_LIMIT` (and those past the run's
:data:`DIGEST_BUDGET`) are not fingerprinted: a change to them is not detected and they travel back by value when
a returned name holds them (the behaviour without fingerprints). Standard library and cloudpickle only.
"""

from __future__ import annotations

import os
import pickle
import types
import zlib
from typing import Any

from .. import wire

# Bytes of pickle (with buffers) of one input; 0 turns fingerprints off (bench/bench_inputs.py compares).
DIGEST_LIMIT = int(os.environ.get("MINI_MAGIC_FINGERPRINT_LIMIT", 8 * 1024 * 1024))
DIGEST_BUDGET = 32 * 1024 * 1024  # bytes fingerprinted per run, all inputs together
# Values whose identity no code can rely on: never worth a reference (pickling asks about every object).
_IMMUTABLE_ATOMS = (type(None), bool, int, float, complex, str, bytes)


class _ChecksumWriter:
    """CRC-32 and length of everything pickled, buffers included. A checksum, not a cryptographic hash: it only has
    to notice accidental change (a changed input read as unchanged has a 1 in 2**32 chance), and it runs at memory
    speed, several times faster than hashlib's digests on these machines."""

    def __init__(self) -> None:
        self.crc = 0
        self.length = 0

    def write(self, data: Any) -> int:
        self.crc = zlib.crc32(data, self.crc)
        n = memoryview(data).nbytes
        self.length += n
        return n

    def buffer(self, buffer: pickle.PickleBuffer) -> None:
        try:
            self.write(buffer.raw())
        except BufferError:  # non-contiguous
            self.write(bytes(buffer))


def fingerprint(value: Any, home: dict[str, Any]) -> tuple[int, int] | None:
    """A checksum of the value's pickle; None when it does not pickle here."""
    writer = _ChecksumWriter()
    try:
        wire.Pickler(writer, protocol=wire.PICKLE_PROTOCOL, buffer_callback=writer.buffer, home=home).dump(value)
    except Exception:  # noqa: BLE001 - not fingerprinted: treated as unknown
        return None
    return writer.crc, writer.length


class RunInputs:
    """The inputs of one run (the values the kernel sent, by name) and their fingerprints before the cell ran."""

    def __init__(self, values: dict[str, Any], sizes: dict[str, int], home: dict[str, Any],
                 references: bool = True) -> None:
        self.home = home
        self.references = references
        self.values = {n: v for n, v in values.items() if not isinstance(v, types.ModuleType)}
        self.before: dict[str, tuple[int, int]] = {}
        budget = DIGEST_BUDGET
        for name, value in self.values.items():
            size = sizes.get(name)
            if size is None or size > DIGEST_LIMIT or size > budget:
                continue
            digest = fingerprint(value, home)
            if digest is not None:
                budget -= size
                self.before[name] = digest
        self._changed: list[str] | None = None

    def changed(self) -> list[str]:
        """Inputs the cell changed in place (computed once, after the cell ran)."""
        if self._changed is None:
            self._changed = [name for name, digest in self.before.items()
                             if fingerprint(self.values[name], self.home) != digest]
        return self._changed

    def arrays(self) -> list[Any]:
        """The numpy arrays among the inputs that travel back as the kernel's own (unchanged or updated in place):
        a view into one of them comes back as a view into the kernel's array."""
        if not self.references:
            return []
        return [self.values[name] for name in self.before if type(self.values[name]).__name__ == "ndarray"]

    def changed_ids(self) -> dict[int, str]:
        """id -> name of the inputs the cell changed: they travel as updates of the kernel's own objects."""
        if not self.references:
            return {}
        return {id(self.values[name]): name for name in self.changed()
                if not isinstance(self.values[name], _IMMUTABLE_ATOMS)}

    def unchanged_ids(self) -> dict[int, str]:
        """id -> name of the inputs that can travel back as references to the kernel's own objects."""
        if not self.references:
            return {}
        changed = set(self.changed())
        return {id(self.values[name]): name for name in self.before
                if name not in changed and not isinstance(self.values[name], _IMMUTABLE_ATOMS)}
