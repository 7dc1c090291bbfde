"""The stand-in the worker's namespace holds for a notebook name the cell may unbind but does not read.

``except E as e:`` and ``x = 1; del x`` unbind a name in a normal cell whether or not the notebook had it. The
worker reports a name as deleted only when it was there at the start of the run and is gone at the end, so such a
name starts the run bound to :data:`NOT_SENT` instead of its value (which the cell never reads, so it does not
travel): gone at the end means the cell unbound it, and still :data:`NOT_SENT` means it did not, so the notebook's
value stays. The worker never sends :data:`NOT_SENT` back.

It pickles by reference (``mini_magic.placeholder.NOT_SENT``), so it is the same object in the kernel and in every
worker. Standard library only: the worker imports it.
"""

from __future__ import annotations

from typing import Final


class NotSent:
    """The type of :data:`NOT_SENT`; one instance."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<mini_magic: this notebook name was not sent to the worker>"

    def __reduce__(self) -> str:
        return "NOT_SENT"


NOT_SENT: Final = NotSent()
