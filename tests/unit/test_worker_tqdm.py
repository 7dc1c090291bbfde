"""Mirrored tqdm bars: updates follow the run's earlier output and hither calls (RunContext.sync), and counts are exact."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r'''
from mini_magic.worker import context, tqdm_mirror
tqdm_mirror.install()
from tqdm import tqdm

log = []
run = context.RunContext("r", emit=lambda kind, **fields: log.append(kind.__name__), sync=lambda: log.append("sync"))
with context.running(run):
    for _ in tqdm(range(2), desc="bar", mininterval=0):
        pass
print(log)
'''


def test_every_progress_event_follows_a_sync() -> None:
    # In a fresh interpreter: install() patches tqdm process-wide, as in a worker.
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    log = eval(out)  # noqa: S307 - our own repr of a list of strings
    assert log and log.count("Progress") >= 2, log
    assert all(log[i - 1] == "sync" for i, kind in enumerate(log) if kind == "Progress"), log


SAME_COUNTS = r'''
import io
from tqdm import std
plain = std.tqdm
from mini_magic.worker import context, tqdm_mirror
tqdm_mirror.install()
mirrored = std.tqdm
assert mirrored is not plain

def scenarios(tqdm):
    seen = []
    bar = tqdm(range(5), file=io.StringIO())
    for _ in bar:
        seen.append(bar.n)
    seen.append(("end", bar.n))
    bar = tqdm((i for i in range(5)), initial=10, file=io.StringIO())
    for i in bar:
        seen.append(bar.n)
        if i == 3:
            break
    del i
    seen.append(("break", bar.n))
    bar = tqdm(list(range(5)), file=io.StringIO())
    try:
        for i in bar:
            if i == 2:
                raise ValueError
    except ValueError:
        pass
    seen.append(("raise", bar.n))
    bar = tqdm(range(4), file=io.StringIO())
    for i in bar:
        bar.update(10)
        seen.append(bar.n)
    seen.append(("mixed", bar.n))
    return seen

events = []
run = context.RunContext("r", emit=lambda kind, **f: events.append((f["n"], f["closed"])), sync=lambda: None)
with context.running(run):
    got = scenarios(mirrored)
print(repr((scenarios(plain), got, events)))
'''


def test_counts_are_exact_at_every_point_of_a_loop() -> None:
    """The mirrored bar counts in C (counted_iteration): ``bar.n`` is what tqdm's would be after the loop, after
    ``break`` and after an exception, and exact inside the loop body (tqdm's own is only brought up to date when it
    redraws). With ``update`` inside the loop, tqdm's count forgets the updates when the loop ends; ours keeps them."""
    out = subprocess.run([sys.executable, "-c", SAME_COUNTS], capture_output=True, text=True, check=True).stdout
    plain, mirrored, events = eval(out)  # noqa: S307 - our own repr
    def ends(seen: list) -> list:
        return [x for x in seen if isinstance(x, tuple)]

    assert ends(mirrored)[:3] == ends(plain)[:3] == [("end", 5), ("break", 13), ("raise", 2)]
    assert ends(plain)[3] == ("mixed", 4) and ends(mirrored)[3] == ("mixed", 44)
    assert [x for x in mirrored if not isinstance(x, tuple)] == [0, 1, 2, 3, 4, 10, 11, 12, 13, 10, 21, 32, 43]
    closed = [n for n, is_closed in events if is_closed]
    assert closed == [5, 13, 2, 44], events  # each bar's final state is sent once, with its final count
