"""Kernel side of tqdm mirroring: each remote bar becomes a local bar.

In a notebook a remote bar becomes a ``tqdm.notebook`` bar; in a terminal IPython (no kernel, so no widgets) a plain
``tqdm`` bar on stderr. Progress events arrive already throttled by the remote tqdm (about ten per second per bar at
most), so every event is drawn. A bar the run left open is closed when the run ends: tqdm.notebook turns an
unfinished bar red, which is how a failed or interrupted run shows in its bars.

A notebook bar's text form (what nbconvert, GitHub or an editor without widgets keep) is re-published when the bar
closes, so it reads ``epochs: 100%|██████████| 100/100`` rather than the 0 % it showed when it appeared.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .wire import Progress


class ProgressMirror:
    """Local bars for one run. ``attach(bar)``, if given, places new notebook bars (a background run's panel);
    otherwise bars display themselves in the cell that is executing. With ``widgets=False`` bars are text on
    stderr."""

    def __init__(self, attach: Callable[[Any], None] | None = None, *, widgets: bool = True) -> None:
        self._attach = attach
        self._widgets = widgets
        self._bars: dict[str, Any] = {}
        self._views: dict[str, Any] = {}  # bar id -> TextView of a bar shown in the cell

    def update(self, event: Progress) -> None:
        bar = self._bars.get(event.bar_id)
        if bar is None:
            bar = self._bars[event.bar_id] = self._create(event)
        bar.total = event.total
        bar.n = event.n
        if event.postfix:
            bar.set_postfix_str(event.postfix, refresh=False)
        if event.closed:
            self._close(event.bar_id)
        else:
            bar.refresh()

    def _create(self, event: Progress) -> Any:
        if not self._widgets:
            from tqdm import tqdm as text_tqdm

            return text_tqdm(total=event.total, desc=event.desc or None, unit=event.unit, leave=event.leave,
                             mininterval=0, file=sys.stderr)
        from tqdm.notebook import tqdm as notebook_tqdm

        from .ui import show_bar

        bar = notebook_tqdm(total=event.total, desc=event.desc or None, unit=event.unit, leave=event.leave,
                            display=False, mininterval=0)
        if self._attach is not None:
            self._attach(bar)
        else:
            self._views[event.bar_id] = show_bar(bar)
        return bar

    def _close(self, bar_id: str) -> None:
        bar = self._bars.pop(bar_id)
        bar.close()
        view = self._views.pop(bar_id, None)
        if view is not None:
            view.refresh()

    def close_all(self) -> None:
        """Close the bars the run left open (unfinished ones turn red)."""
        while self._bars:
            self._close(next(iter(self._bars)))
