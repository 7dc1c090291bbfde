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


DYING_SCRIPT = """
import os, sys, threading, time
from mini_magic.worker.output import EventSender, OutputCapture

out_r, err_r, log_fd = map(int, sys.argv[1:])
passed_on = threading.Event()

def send_then_die_before_it_arrives(events):
    passed_on.set()
    threading.Event().wait()  # the process dies while this event is still on its way

capture = OutputCapture(EventSender(send_then_die_before_it_arrives), log_fd, read_fds=(out_r, err_r))
capture.active = True
print("last words", flush=True)
passed_on.wait(10)
time.sleep(0.1)
os._exit(3)
"""


def test_output_the_worker_read_but_never_forwarded_is_still_in_the_pipe_for_the_kernel(tmp_path: Path) -> None:
    """The kernel drains its copy of the pipes' read ends after a worker died: bytes the worker's reader had taken
    but not yet sent must still be there (the crash test in tests/kernel saw only the '\\n' of 'last words')."""
    import os

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    log_fd = os.open(tmp_path / "worker.log", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", DYING_SCRIPT, str(out_r), str(err_r), str(log_fd)],
            stdout=out_w, stderr=err_w, pass_fds=(out_r, err_r, log_fd), timeout=60, check=False,
        )
        os.close(out_w)
        os.close(err_w)
        assert proc.returncode == 3
        os.set_blocking(out_r, False)
        leftover = os.read(out_r, 65536).decode()
    finally:
        for fd in (out_r, err_r, log_fd):
            os.close(fd)
    assert leftover == "last words\n"
