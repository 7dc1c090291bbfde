"""Pickling that keeps values tied to their namespace (mini_magic.namespace_pickling, worker/inputs.py)."""

from __future__ import annotations

import sys

import numpy as np

from mini_magic import wire
from mini_magic.worker.inputs import RunInputs


def _define(source: str, namespace: dict) -> dict:
    exec(compile(source, "<cell>", "exec"), namespace)  # noqa: S102 - a notebook cell, in its namespace
    return namespace


def test_a_function_is_rebuilt_in_the_receivers_namespace_with_the_globals_it_reads() -> None:
    sender = _define("y = 3\nscale = 10\ndef f():\n    return y * scale\n", {"__name__": "__main__"})
    packed, _ = wire.pack_values({"f": sender["f"]}, home=sender, ship_globals=True)
    receiver = {"__name__": "__main__", "scale": 100}
    f = packed.unpack(home=receiver)["f"]
    assert f.__globals__ is receiver
    assert receiver["y"] == 3 and receiver["scale"] == 100  # added where missing; the receiver's own binding wins
    assert f() == 300
    receiver["y"] = 5
    assert f() == 500  # reads the namespace at call time, as a notebook function does


def test_without_ship_globals_nothing_is_added_to_the_receiver() -> None:
    sender = _define("y = 3\ndef f():\n    return y\n", {"__name__": "__main__"})
    packed, _ = wire.pack_values({"f": sender["f"]}, home=sender)
    receiver = {"__name__": "__main__"}
    f = packed.unpack(home=receiver)["f"]
    assert "y" not in receiver and f.__globals__ is receiver


def test_recursion_closures_defaults_and_attributes_survive() -> None:
    sender = _define(
        "def fact(n):\n    return 1 if n <= 1 else n * fact(n - 1)\n"
        "def counter(start=5, *, step=2):\n    def inner():\n        return inner.calls + start + step\n"
        "    inner.calls = 0\n    return inner\n"
        "made = counter()\nmade.tag = 'x'\n",
        {"__name__": "__main__"},
    )
    packed, _ = wire.pack_values({"fact": sender["fact"], "made": sender["made"], "counter": sender["counter"]},
                                 home=sender, ship_globals=True)
    receiver = {"__name__": "__main__"}
    values = packed.unpack(home=receiver)
    assert values["fact"](5) == 120 and receiver["fact"] is not sender["fact"]
    assert values["made"]() == 7 and values["made"].tag == "x" and values["made"].calls == 0
    assert values["counter"].__defaults__ == (5,) and values["counter"].__kwdefaults__ == {"step": 2}
    assert values["made"].__qualname__ == "counter.<locals>.inner"


def test_outside_a_receiving_context_a_function_gets_a_namespace_of_its_own() -> None:
    sender = _define("y = 3\ndef f():\n    return y\n", {"__name__": "__main__"})
    packed, _ = wire.pack_values({"f": sender["f"]}, home=sender, ship_globals=True)
    f = packed.unpack()["f"]
    assert f() == 3 and f.__globals__ is not sender


def test_known_objects_travel_as_references_lists_and_dicts_included() -> None:
    a, table = [1, 2], {"k": 1}
    packed, _ = wire.pack_values({"b": a, "both": [a, table], "t": table}, known={id(a): "a", id(table): "table"})
    values = packed.unpack(known={"a": a, "table": table})
    assert values["b"] is a and values["both"][0] is a and values["both"][1] is table and values["t"] is table


def test_a_library_class_whose_module_is_not_imported_travels_by_reference() -> None:
    sys.modules.pop("numpy.rec", None)  # numpy imports it lazily: recarray.__module__ == "numpy.rec"
    r = np.zeros(2, dtype=[("age", "i4")]).view(np.recarray)
    packed, _ = wire.pack_values({"r": r})
    assert b"numpy.rec" in packed.data and b"recarray" in packed.data
    back = packed.unpack()["r"]
    assert type(back) is np.recarray and back["age"].tolist() == [0, 0]


def test_run_inputs_see_changes_in_place_and_only_unchanged_inputs_are_referenced() -> None:
    namespace = _define("def f():\n    return 1\n", {"__name__": "__main__"})
    values = {"xs": [1], "same": {"a": 1}, "n": 5, "f": namespace["f"]}
    inputs = RunInputs(values, {name: 100 for name in values}, namespace)
    values["xs"].append(2)
    namespace["unrelated"] = 1  # a new global does not change f's fingerprint (its globals are not part of it)
    assert inputs.changed() == ["xs"]
    referenced = inputs.unchanged_ids()
    assert referenced == {id(values["same"]): "same", id(values["f"]): "f"}  # ints: identity means nothing
    assert RunInputs(values, {}, namespace).unchanged_ids() == {}  # sizes unknown: nothing fingerprinted
    assert RunInputs(values, {n: 100 for n in values}, namespace, references=False).unchanged_ids() == {}


def test_inputs_over_the_limit_are_not_fingerprinted(monkeypatch) -> None:
    from mini_magic.worker import inputs as worker_inputs

    monkeypatch.setattr(worker_inputs, "DIGEST_LIMIT", 1000)
    inputs = RunInputs({"small": [1], "big": [2]}, {"small": 999, "big": 1001}, {})
    assert set(inputs.before) == {"small"}


def test_a_view_of_an_array_in_the_same_message_stays_a_view() -> None:
    a = np.arange(8.0)
    packed, _ = wire.pack_values({"v": a[6:1:-2], "a": a, "alone": a[:2].copy()[:1]})
    values = packed.unpack()
    values["v"][0] = 100.0
    assert values["a"][6] == 100.0 and np.shares_memory(values["v"], values["a"])
    assert values["v"].tolist() == [100.0, 4.0, 2.0]
    # a view whose base does not travel is a copy, as before (the base may be large and unwanted)
    assert values["alone"].tolist() == [0.0] and not np.shares_memory(values["alone"], values["a"])


def test_a_view_of_a_known_object_is_a_view_of_the_receivers_array() -> None:
    big = np.zeros(10)
    packed, _ = wire.pack_values({"head": big[:3]}, known={id(big): "big"})
    head = packed.unpack(known={"big": big})["head"]
    head[0] = 5
    assert big[0] == 5


def test_a_cached_notebook_function_travels_with_its_cache_settings() -> None:
    sender = _define("import functools\n@functools.lru_cache(maxsize=7)\ndef sq(n):\n    return n * n\n"
                     "inc = functools.cache(lambda n: n + 1)\n", {"__name__": "__main__"})
    packed, _ = wire.pack_values({"sq": sender["sq"], "inc": sender["inc"]}, home=sender, ship_globals=True)
    values = packed.unpack(home={"__name__": "__main__"})
    assert values["sq"](3) == 9 and values["sq"].cache_parameters() == {"maxsize": 7, "typed": False}
    assert values["inc"](1) == 2 and values["inc"].cache_parameters()["maxsize"] is None


class _Plain:
    def __init__(self) -> None:
        self.w = 0


def _round_trip_changed(sent: dict, changed_values: dict, results: dict) -> dict:
    """Pack ``results`` as the worker does when the inputs ``changed_values`` (name -> the worker's changed copy)
    were changed in place, and unpack them as the kernel does (``sent``: the kernel's own objects)."""
    packed, failures = wire.pack_values(results, changed={id(v): n for n, v in changed_values.items()})
    assert not failures
    return packed.unpack(known=sent)


def test_inputs_changed_in_place_update_the_receivers_own_objects() -> None:
    xs, table, obj, arr, members = [1], {"a": 1}, _Plain(), np.zeros(4), {1}
    view = arr[1:3]
    sent = {"xs": xs, "table": table, "obj": obj, "view": view, "members": members}
    remote = {"xs": [1, 2], "table": {"b": 2}, "obj": _Plain(), "view": np.array([5.0, 6.0]), "members": {1, 2}}
    remote["obj"].w = 7
    back = _round_trip_changed(sent, remote, {**remote, "holder": [remote["xs"]]})
    assert back["xs"] is xs and xs == [1, 2]
    assert back["table"] is table and table == {"b": 2}
    assert back["obj"] is obj and obj.w == 7
    assert back["view"] is view and arr.tolist() == [0.0, 5.0, 6.0, 0.0]  # the write reached the view's base
    assert back["members"] is members and members == {1, 2}
    assert back["holder"][0] is xs  # later references in the message are the updated local object


def test_an_object_that_cannot_be_updated_in_place_comes_back_as_a_new_object() -> None:
    arr = np.zeros(2)
    back = _round_trip_changed({"arr": arr}, {"arr": np.zeros(3)}, {"arr": np.zeros(3)})
    assert back["arr"] is not arr and back["arr"].shape == (3,) and arr.shape == (2,)


def test_library_objects_are_updated_in_place() -> None:
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    df, model = pd.DataFrame({"a": [1, 2]}), LinearRegression()
    remote_df, remote_model = df.copy(), LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0])
    remote_df["b"] = [3, 4]
    back = _round_trip_changed({"df": df, "model": model}, {"df": remote_df, "model": remote_model},
                               {"df": remote_df, "model": remote_model})
    assert back["df"] is df and df.columns.tolist() == ["a", "b"] and df["b"].tolist() == [3, 4]
    assert back["model"] is model and round(float(model.coef_[0]), 6) == 2.0


def test_views_of_one_block_share_it_without_referring_to_each_other() -> None:
    hidden = np.arange(15)
    a = hidden.reshape(3, 5)  # itself a view, of an array that does not travel
    packed, _ = wire.pack_values({"flat": a.ravel(), "square": a.reshape(5, 3), "a": a, "tail": a[2, ::-1]})
    values = packed.unpack()
    values["flat"][0] = 99
    values["tail"][0] = -1
    assert values["a"][0, 0] == 99 and values["square"][0, 0] == 99 and values["a"][2, 4] == -1


def test_a_function_whose_closure_changed_is_updated_in_place() -> None:
    namespace = _define("def make(start):\n    count = start\n    def step():\n        nonlocal count\n"
                        "        count += 1\n        return count\n    return step\ncounter = make(10)\n",
                        {"__name__": "__main__"})
    local = namespace["counter"]
    remote = _round_trip_changed({"counter": local}, {}, {})  # nothing changed: nothing to do
    assert remote == {}
    worker_copy = wire.pack_values({"c": local}, home=namespace)[0].unpack(home=namespace)["c"]
    worker_copy()
    back = wire.pack_values({"counter": worker_copy}, home=namespace, changed={id(worker_copy): "counter"})[0]
    assert back.unpack(home=namespace, known={"counter": local})["counter"] is local
    assert local() == 12  # 10, then 11 in the worker, then 12 here


def test_a_notebook_class_with_slots_keeps_them_in_another_process() -> None:
    import subprocess

    sender = _define("class Slotted:\n    __slots__ = ('n',)\n    def __init__(self):\n        self.n = 0\n"
                     "    def bump(self):\n        self.n += 1\n        return self\ns = Slotted().bump()\n",
                     {"__name__": "__main__"})
    packed, _ = wire.pack_values({"C": sender["Slotted"], "s": sender["s"]}, home=sender)
    # in another process: in this one cloudpickle would hand back the original class from its class tracker
    check = ("import pickle, sys\nfrom mini_magic import wire\nnames, data = pickle.load(sys.stdin.buffer)\n"
             "v = wire.PackedValues(names, data).unpack(home={'__name__': '__main__'})\n"
             "print('n' in vars(v['C']), hasattr(v['s'], '__dict__'), v['s'].n, type(v['s']) is v['C'], "
             "v['s'].bump().n)")
    import pickle

    out = subprocess.run([sys.executable, "-c", check], input=pickle.dumps((packed.names, packed.data)),
                         capture_output=True, check=True).stdout.decode()
    assert out.split() == ["True", "False", "1", "True", "2"]
