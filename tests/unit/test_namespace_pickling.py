"""Pickling that keeps values tied to their namespace (mini_magic.namespace_pickling, worker_inputs)."""

from __future__ import annotations

import sys

import numpy as np

from mini_magic import wire
from mini_magic.worker_inputs import RunInputs


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
    from mini_magic import worker_inputs

    monkeypatch.setattr(worker_inputs, "DIGEST_LIMIT", 1000)
    inputs = RunInputs({"small": [1], "big": [2]}, {"small": 999, "big": 1001}, {})
    assert set(inputs.before) == {"small"}
