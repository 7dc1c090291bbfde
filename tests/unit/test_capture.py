"""Closure packing and local-module discovery (kernel side, no worker needed)."""

from __future__ import annotations

import io
import socket
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from mini_magic import wire
from mini_magic.capture import closure_values, local_module_sources, notebook_sources, pack_closure
from mini_magic.closure import analyze_cell
from mini_magic.errors import CaptureError


def test_only_names_the_cell_reads_are_captured() -> None:
    namespace = {"a": 1, "b": 2, "unused": 3, "np": np, "get_ipython": object(), "In": []}
    values = closure_values(analyze_cell("c = a + b\nnp.zeros(1)\nget_ipython\nIn"), namespace)
    assert list(values) == ["a", "b", "np"]
    assert values["np"] == wire.ModuleRef("numpy")


def test_absent_names_stay_absent() -> None:
    assert closure_values(analyze_cell("print(missing)"), {}) == {}


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: open(__file__), "open file"),
        (lambda: threading.Lock(), "lock"),
        (lambda: socket.socket(), "network connection"),
        (lambda: (i for i in range(3)), "generator"),
        (lambda: {"nested": threading.Lock()}, "cannot be pickled"),
    ],
    ids=["file", "lock", "socket", "generator", "nested"],
)
def test_unpicklable_values_are_refused_with_name_type_reason_and_fix(make, words) -> None:
    value = make()
    try:
        with pytest.raises(CaptureError) as info:
            pack_closure({"fine": 1, "culprit": value})
    finally:
        if isinstance(value, (socket.socket, io.IOBase)):
            value.close()
    message = str(info.value)
    assert "'culprit'" in message and type(value).__name__ in message and words in message
    assert "inside the cell" in message or "__getstate__" in message


def test_modules_referenced_by_pickled_objects_are_reported() -> None:
    module = types.ModuleType("fake_local_mod")
    exec("class Thing:\n    pass\n", module.__dict__)
    module.Thing.__module__ = "fake_local_mod"
    sys.modules["fake_local_mod"] = module
    try:
        modules = pack_closure({"t": module.Thing(), "np": wire.ModuleRef("numpy")}).modules
    finally:
        del sys.modules["fake_local_mod"]
    assert {"fake_local_mod", "numpy"} <= modules


def test_local_modules_and_their_local_imports_ship_as_source(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "helpers.py").write_text("import utils\nVALUE = utils.X\n")
    (tmp_path / "utils.py").write_text("X = 1\n")
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .core import f\n")
    (pkg / "core.py").write_text("def f():\n    return 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text("Y = 2\n")
    (tmp_path / "notes.txt").write_text("not python")
    monkeypatch.syspath_prepend(str(tmp_path))
    shipped = {m.name: m for m in local_module_sources({"helpers", "pkg.core", "numpy", "os"}, str(tmp_path))}
    assert set(shipped) == {"helpers", "utils", "pkg", "pkg.core", "pkg.sub", "pkg.sub.deep"}
    assert shipped["pkg"].is_package and not shipped["pkg.core"].is_package
    assert shipped["utils"].source == "X = 1\n"


def test_site_packages_and_stdlib_are_never_shipped(tmp_path: Path) -> None:
    assert local_module_sources({"numpy", "json", "cloudpickle", "mini_magic"}, "/") == ()


def test_notebook_sources_come_from_linecache_for_cell_defined_functions() -> None:
    import linecache

    filename = "/tmp/ipykernel_0/123.py"
    source = "def f():\n    return 1\n"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict = {}
    exec(compile(source, filename, "exec"), namespace)
    try:
        assert notebook_sources([namespace["f"], 3]) == {filename: source}
    finally:
        del linecache.cache[filename]


def test_a_notebook_function_ships_the_globals_it_loads_not_its_attribute_names() -> None:
    from mini_magic.namespace_pickling import global_names

    def uses(handle):
        return handle.stream(), helper(), [CONSTANT for _ in range(1)]

    names = global_names(uses.__code__)
    assert {"helper", "CONSTANT", "range"} <= names and "stream" not in names
