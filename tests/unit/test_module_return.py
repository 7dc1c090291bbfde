"""Modules a thither cell returns: assigned as they are when the kernel has them, else imported on first use."""

from __future__ import annotations

import sys
import types
import uuid
from pathlib import Path

import cloudpickle
import IPython
import pytest

from mini_magic import wire
from mini_magic.module_return import ReturnedModule, rebuild


@pytest.fixture
def fresh_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """make(source, submodule=None) -> the name of a module (or package with that submodule) on sys.path that
    nothing has imported yet."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def make(source: str = "", *, submodule: str | None = None) -> str:
        name = f"mm_fresh_{uuid.uuid4().hex[:8]}"
        if submodule is None:
            (tmp_path / f"{name}.py").write_text(source)
        else:
            (tmp_path / name).mkdir()
            (tmp_path / name / "__init__.py").write_text("IMPORTS = []\n")
            (tmp_path / name / f"{submodule}.py").write_text(source)
        names.append(name)
        return name

    yield make
    for module in [m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names)]:
        del sys.modules[module]


def test_values_that_are_not_modules_pass_through():
    value = object()
    assert rebuild(value) is value


def test_a_module_the_kernel_has_is_assigned_as_it_is():
    assert rebuild(wire.ModuleRef("os")) is sys.modules["os"]


def test_a_module_the_kernel_lacks_is_not_imported_until_used(fresh_module):
    name = fresh_module("import sys\nsys.stdout.write('imported!')\nVALUE = 42\n")
    module = rebuild(wire.ModuleRef(name))
    assert isinstance(module, ReturnedModule) and isinstance(module, types.ModuleType)
    # What the kernel and IPython do with a fresh value must not import it.
    assert module.__name__ == name
    assert module.__package__ is None
    assert "first use" in repr(module)
    assert not hasattr(module, "_repr_html_") and not hasattr(module, "_ipython_display_")
    assert name not in sys.modules
    assert module.VALUE == 42
    real = sys.modules[name]
    assert repr(module) == repr(real)
    assert module.__file__ == real.__file__
    assert vars(module) is vars(real)
    assert "VALUE" in dir(module)
    module.OTHER = 1
    assert real.OTHER == 1
    del module.OTHER
    assert not hasattr(real, "OTHER")


def test_first_use_prints_what_the_import_prints_once(fresh_module, capsys):
    name = fresh_module("print('side effect')\nVALUE = 1\n")
    module = rebuild(wire.ModuleRef(name))
    assert capsys.readouterr().out == ""
    assert (module.VALUE, module.VALUE) == (1, 1)
    assert capsys.readouterr().out == "side effect\n"


def test_a_submodule_imports_its_package_and_from_imports_still_work(fresh_module):
    package = fresh_module("VALUE = 'sub'\n", submodule="sub")
    module = rebuild(wire.ModuleRef(f"{package}.sub"))
    assert package not in sys.modules
    assert module.VALUE == "sub"
    assert sys.modules[package].sub is sys.modules[f"{package}.sub"]
    namespace: dict = {}
    exec(f"from {package} import sub\nfrom {package}.sub import VALUE", namespace)  # noqa: S102 - the test's code
    assert namespace["sub"] is sys.modules[f"{package}.sub"] and namespace["VALUE"] == "sub"


def test_a_module_not_installed_here_fails_clearly_on_use_and_again_after():
    name = f"mm_missing_{uuid.uuid4().hex[:8]}"
    module = rebuild(wire.ModuleRef(f"{name}.inner"))
    for _ in range(2):
        with pytest.raises(ModuleNotFoundError) as caught:
            module.anything  # noqa: B018 - the use
        assert caught.value.name == f"{name}.inner"
        assert "%%thither" in str(caught.value) and "not installed here" in str(caught.value)


def test_a_missing_dependency_of_an_installed_module_is_reported_as_it_is(fresh_module):
    name = fresh_module("import mm_missing_dependency_xyz\n")
    module = rebuild(wire.ModuleRef(name))
    with pytest.raises(ModuleNotFoundError) as caught:
        module.anything  # noqa: B018 - the use
    assert caught.value.name == "mm_missing_dependency_xyz"


def test_first_use_rebinds_the_notebook_names_that_hold_it(fresh_module, monkeypatch):
    name = fresh_module("VALUE = 3\n")
    module = rebuild(wire.ModuleRef(name))
    user_ns = {"m": module, "alias": module, "other": 1}
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(user_ns=user_ns))
    assert module.VALUE == 3
    assert user_ns["m"] is sys.modules[name] and user_ns["alias"] is sys.modules[name]
    assert user_ns["other"] == 1


def test_it_travels_by_name_without_being_imported_here(fresh_module):
    name = fresh_module("VALUE = 7\n")
    module = rebuild(wire.ModuleRef(name))
    namespace = {"mod": module, "__builtins__": __builtins__}
    exec("def use():\n    return mod.VALUE\n", namespace)  # noqa: S102 - a notebook function that reads it
    data = cloudpickle.dumps(namespace["use"])
    assert name not in sys.modules
    assert cloudpickle.loads(data)() == 7  # the receiving side imports it
