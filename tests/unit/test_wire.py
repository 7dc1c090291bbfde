"""The wire format: job header checks before unpickling, per-name packing, event framing."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
import threading
import traceback

import numpy as np
import pytest

from mini_magic import wire


class Explodes:
    """Unpickling this object records that it happened (it must not, before a header check)."""

    created: list[str] = []

    def __reduce__(self):
        return (Explodes._record, ("unpickled",))

    @staticmethod
    def _record(what: str) -> str:
        Explodes.created.append(what)
        return what


def test_pack_keeps_names_order_and_shared_references() -> None:
    shared = [1, 2]
    packed, failures = wire.pack_values({"a": shared, "b": {"ref": shared}, "n": 3})
    assert not failures
    values = packed.unpack()
    assert list(values) == ["a", "b", "n"]
    assert values["b"]["ref"] is values["a"]


def test_large_buffers_go_out_of_band_and_round_trip() -> None:
    array = np.arange(1_000_000, dtype=np.float64)
    packed, _ = wire.pack_values({"x": array})
    assert len(packed.data) < 10_000  # the 8 MB of data is not inside the pickle stream
    assert sum(memoryview(b).nbytes for b in packed.buffers) == array.nbytes
    np.testing.assert_array_equal(packed.unpack()["x"], array)


NOTEBOOK_CELL = "<ipython-input-7-0123456789ab>"  # a notebook cell's file name: there is no such file


def test_functions_keep_their_notebook_file_name_and_lines() -> None:
    """Remote tracebacks find a notebook function's source by its code object's file name and line numbers, whatever
    the installed cloudpickle does to code objects (3.1.3 renames them all to <dynamic-code>)."""
    source = "\n\n".join([
        "def outer(v):\n    inner = lambda w: 1 / w\n    return inner(v)",
        "class Model:\n    def step(self):\n        raise KeyError('in step')",
    ])
    namespace: dict[str, object] = {"__name__": "a_notebook_not_importable_anywhere"}
    exec(compile(source, NOTEBOOK_CELL, "exec"), namespace)  # noqa: S102 - defining test functions
    packed, _ = wire.pack_values({"outer": namespace["outer"], "Model": namespace["Model"]})
    out = packed.unpack()
    assert out["outer"] is not namespace["outer"]  # pickled by value, as notebook functions are
    lam = next(c for c in out["outer"].__code__.co_consts if hasattr(c, "co_filename"))
    step = out["Model"].step.__code__
    assert {out["outer"].__code__.co_filename, lam.co_filename, step.co_filename} == {NOTEBOOK_CELL}
    assert (out["outer"].__code__.co_firstlineno, step.co_firstlineno) == (1, 6)
    with pytest.raises(ZeroDivisionError) as info:
        out["outer"](0)
    assert [(f.filename, f.lineno) for f in traceback.extract_tb(info.tb)[-2:]] == [(NOTEBOOK_CELL, 3), (NOTEBOOK_CELL, 2)]


def test_pack_failure_names_the_variable() -> None:
    with pytest.raises(wire.PackError) as info:
        wire.pack_values({"ok": 1, "lock": threading.Lock()})
    assert info.value.name == "lock"


def test_skip_failures_packs_the_rest_consistently() -> None:
    shared = ["s"]
    values = {"a": shared, "bad": threading.Lock(), "c": {"r": shared}}
    packed, failures = wire.pack_values(values, skip_failures=True)
    assert set(failures) == {"bad"}
    out = packed.unpack()
    assert out["c"]["r"] is out["a"] and "bad" not in out


def test_unpack_reports_the_failed_name_and_never_resumes_misaligned() -> None:
    # Break the reference to Explodes._record so that 'b' cannot be rebuilt, as when its module is missing here.
    packed, _ = wire.pack_values({"a": [1], "b": Explodes(), "c": [2]})
    broken = dataclasses.replace(packed, data=packed.data.replace(b"_record", b"_missin"))
    errors: dict[str, BaseException] = {}
    values = broken.unpack(on_error=lambda name, exc: errors.setdefault(name, exc))
    assert values == {"a": [1]}
    assert isinstance(errors["b"], AttributeError)
    assert isinstance(errors["c"], wire.UnpackAborted) and "'b'" in str(errors["c"])


def test_job_round_trip_through_frames() -> None:
    closure, _ = wire.pack_values({"x": np.ones(1000)})
    job = wire.Job(header=wire.JobHeader(run_id="r1"), source="y = x.sum()", filename="<cell>", first_line=2,
                   closure=closure, outputs=("y",), env={"A": "1"}, cwd="/tmp")
    frames = wire.encode_job(job)
    control = wire.read_control(frames[0])
    assert control["type"] == "job" and control["run_id"] == "r1"
    decoded = wire.decode_job(wire.JobHeader.from_dict(control), [bytearray(f) for f in frames[1:]])
    assert decoded.source == job.source and decoded.outputs == ("y",) and decoded.env == {"A": "1"}
    np.testing.assert_array_equal(decoded.closure.unpack()["x"], np.ones(1000))


def test_header_is_checked_without_unpickling_the_body() -> None:
    Explodes.created.clear()
    closure, _ = wire.pack_values({"boom": Explodes()})
    job = wire.Job(header=wire.JobHeader(run_id="r", python="2.7"), source="", filename="<c>", first_line=1,
                   closure=closure)
    frames = wire.encode_job(job)
    header = wire.JobHeader.from_dict(wire.read_control(frames[0]))
    problem = header.mismatch()
    assert problem is not None and "Python 2.7" in problem and wire.python_version() in problem
    assert Explodes.created == []


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [("protocol", 999, "wire protocol 999"), ("cloudpickle", "0.1.0", "cloudpickle 0.1.0")],
)
def test_header_mismatch_messages_say_what_to_do(field: str, value: object, words: str) -> None:
    header = dataclasses.replace(wire.JobHeader(run_id="r"), **{field: value})
    message = header.mismatch()
    assert message is not None and words in message


def test_matching_header_is_accepted() -> None:
    assert wire.JobHeader(run_id="r").mismatch() is None


def test_events_round_trip_with_out_of_band_results() -> None:
    outputs, _ = wire.pack_values({"arr": np.arange(100_000)})
    events = [
        wire.Started(seq=1, run_id="r", pid=1, host="h"),
        wire.Stdout(seq=2, text="hi\n"),
        wire.Display(seq=3, data={"text/plain": "x"}, metadata={}, display_id="d"),
        wire.Result(seq=4, outputs=outputs, unsendable={}, deleted=()),
    ]
    frames = wire.encode_events(events)
    assert len(frames) == 2  # the array's buffer travels as its own frame
    decoded = wire.decode_events([bytearray(f) for f in frames])
    assert [type(e) for e in decoded] == [type(e) for e in events]
    assert [e.seq for e in decoded] == [1, 2, 3, 4]
    assert decoded[-1].terminal and not decoded[1].terminal
    np.testing.assert_array_equal(decoded[-1].outputs.unpack()["arr"], np.arange(100_000))


def test_packed_values_pickle_in_band_without_a_buffer_callback() -> None:
    packed, _ = wire.pack_values({"arr": np.arange(10)})
    again = pickle.loads(pickle.dumps(packed, protocol=5))
    np.testing.assert_array_equal(again.unpack()["arr"], np.arange(10))


def test_worker_side_imports_only_stdlib_and_cloudpickle() -> None:
    code = (
        "import sys; before = set(sys.modules)\n"
        "import mini_magic.worker.runner, mini_magic.worker.__main__, mini_magic.worker.modal\n"
        "import mini_magic.worker.keeper\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "allowed = set(sys.stdlib_module_names) | {'mini_magic', 'cloudpickle', '_distutils_hack'}\n"
        "print(sorted(m for m in new if m not in allowed and not m.startswith('_')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
