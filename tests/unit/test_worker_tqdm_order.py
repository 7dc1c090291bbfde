"""A mirrored tqdm bar's update is sent after the run's earlier output and hither calls (RunContext.sync)."""

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
