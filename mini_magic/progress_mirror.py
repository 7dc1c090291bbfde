"""Kernel side of tqdm mirroring: each remote bar becomes a local ``tqdm.notebook`` bar.

Progress events arrive already throttled by the remote tqdm (about ten per second per bar at most), so every event
is drawn. A bar the run left open is closed when the run ends: tqdm.notebook turns an unfinished bar red, which is
how a failed or interrupted run shows in its bars.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .wire import Progress


class ProgressMirror:
    """Local bars for one run. ``attach(widget)``, if given, places new bars (a background run's panel); otherwise
    bars display themselves in the cell that is executing."""

    def __init__(self, attach: Callable[[Any], None] | None = None) -> None:
        self._attach = attach
        self._bars: dict[str, Any] = {}

    def update(self, event: Progress) -> None:
        bar = self._bars.get(event.bar_id)
        if bar is None:
            bar = self._bars[event.bar_id] = self._create(event)
        bar.total = event.total
        bar.n = event.n
        if event.postfix:
            bar.set_postfix_str(event.postfix, refresh=False)
        if event.closed:
            del self._bars[event.bar_id]
            bar.close()
        else:
            bar.refresh()

    def _create(self, event: Progress) -> Any:
        from tqdm.notebook import tqdm as notebook_tqdm

        bar = notebook_tqdm(total=event.total, desc=event.desc or None, unit=event.unit, leave=event.leave,
                            display=self._attach is None, mininterval=0)
        if self._attach is not None:
            self._attach(bar.container)
        return bar

    def close_all(self) -> None:
        """Close the bars the run left open (unfinished ones turn red)."""
        while self._bars:
            _, bar = self._bars.popitem()
            bar.close()
