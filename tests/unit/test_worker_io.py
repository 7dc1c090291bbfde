"""The worker's fd-level capture, in a real subprocess (it takes over fds 1 and 2): what it forwards and what it
logs are scrubbed, also when a secret value reaches the pipe in two writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

VALUE = "hunter2-very-secret"

SCRIPT = f"""
import json, os, sys, time
from mini_magic import wire
from mini_magic.scrub import Scrubber
from mini_magic.worker.output import EventSender, OutputCapture

log_path, report_path = sys.argv[1:]
events = []
log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT, 0o600)
capture = OutputCapture(EventSender(events.extend, Scrubber([{VALUE!r}])), log_fd)

def split_write(fd, label):
    # Two writes some milliseconds apart: the reader thread sees them in two reads.
    os.write(fd, (label + " {VALUE[:7]}").encode())
    time.sleep(0.02)
    os.write(fd, "{VALUE[7:]} end\\n".encode())

split_write(1, "between runs")  # no run is active: this goes to the worker's log
capture.sync()
capture.active = True
split_write(1, "out")
split_write(2, "err")
print("whole", {VALUE!r})
capture.sync()
capture.active = False
with open(report_path, "w") as f:
    json.dump([[type(e).__name__, e.text] for e in events], f)
"""


def test_forwarded_and_logged_output_is_scrubbed_even_when_a_value_is_split(tmp_path: Path) -> None:
    log, report = tmp_path / "worker.log", tmp_path / "events.json"
    subprocess.run([sys.executable, "-c", SCRIPT, str(log), str(report)], check=True, timeout=60)
    events = json.loads(report.read_text())
    stdout = "".join(text for kind, text in events if kind == "Stdout")
    stderr = "".join(text for kind, text in events if kind == "Stderr")
    assert stdout == "out ******** end\nwhole ********\n", events
    assert stderr == "err ******** end\n", events
    assert log.read_text() == "between runs ******** end\n"
