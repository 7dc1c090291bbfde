"""The Modal backend against the offline fake control plane (tests/modal/fake_modal): warm cell round trip, and
queue operations per run at 100,000 hither calls (the backend batches events: a few put_many/get_many a second).

Run: python bench/bench_modal_fake.py   (needs the test extras: modal==1.6.4)
"""

import os, sys, time, tempfile
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.modal.fake_modal import FakeModal
from tests.modal.fake_modal.server import _reset_modal_client
import mini_magic
fake = FakeModal(container_packages=[os.path.dirname(mini_magic.__file__)]).start()
os.environ.update(fake.client_env()); _reset_modal_client()
from mini_magic.backends.modal import ModalBackend
from mini_magic.options import RunOptions
from mini_magic.jobs import CellContext
from mini_magic.session import run_cell
from mini_magic.sinks import ListSink
from mini_magic.runs import RunRegistry
from mini_magic import hither
got = []
@hither
def track(i): got.append(i)
class Sink(ListSink):
    def stderr(s,t): print("ERR", t)
b = ModalBackend({}); reg = RunRegistry(tempfile.mkdtemp()+"/r.sqlite")
ctx = CellContext(hither_interval=ModalBackend.hither_interval)
run_cell("x = 1", {}, RunOptions(backend="modal"), backend=b, registry=reg, sink=Sink(), context=ctx, show_panel=False)
times = []
for i in range(10):
    t = time.perf_counter(); run_cell("x = 1", {}, RunOptions(backend="modal"), backend=b, registry=reg, sink=Sink(), context=ctx, show_panel=False); times.append(time.perf_counter()-t)
times.sort(); print(f"warm trivial cell vs fake: median {times[5]*1e3:.0f} ms, min {times[0]*1e3:.0f} ms")
mark = fake.mark(); t = time.perf_counter()
run_cell("import time\nt=time.perf_counter()\nfor i in range(100000): track(i)\nloop=time.perf_counter()-t", {"track": track}, RunOptions(backend="modal", out=("loop",)), backend=b, registry=reg, sink=Sink(), context=ctx, show_panel=False)
el = time.perf_counter()-t
calls = fake.calls_since(mark)
q = [c for c in calls if c.startswith("Queue")]
from collections import Counter
print("100k hither calls:", len(got), "in order", got == list(range(100000)), f"elapsed {el:.2f}s", Counter(q), f"queue ops/s {len(q)/el:.1f}")
got.clear(); mark = fake.mark(); t = time.perf_counter()
run_cell("import time\nfor i in range(100000):\n    track(i)\n    if i % 1000 == 0: time.sleep(0.05)", {"track": track}, RunOptions(backend="modal", out=()), backend=b, registry=reg, sink=Sink(), context=ctx, show_panel=False)
el = time.perf_counter()-t; q = [c for c in fake.calls_since(mark) if c.startswith("Queue")]
print("100k calls spread over", f"{el:.1f}s:", len(got), got == list(range(100000)), Counter(q), f"queue ops/s {len(q)/el:.1f}")
b.close(); fake.stop()
