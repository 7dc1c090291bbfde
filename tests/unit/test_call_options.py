"""``@thither(...)`` keywords become the same RunOptions a cell's flags give, with the same checks."""

from __future__ import annotations

import pytest

from mini_magic import thither
from mini_magic.call_options import resolve, to_flags
from mini_magic.config import Thither
from mini_magic.errors import ThitherUsageError


def test_keywords_are_the_flags_of_a_cell() -> None:
    argv = to_flags({"gpu": "L4", "timeout": 60, "env": {"SEED": "1"}, "volumes": ["data:/data", ("x", "/x")],
                     "secrets": "hf", "backend": "local"}, "owner")
    assert argv == ["--gpu", "L4", "--timeout", "60", "--env", "SEED=1", "--volume", "data:/data", "--volume", "x:/x",
                    "--secret", "hf", "--backend", "local"]
    options = resolve({"gpu": "L4", "timeout": 60, "env": {"SEED": "1"}, "volumes": ["data:/data"]},
                      Thither(env={"BASE": "b"}), "owner")
    assert (options.backend, options.gpu, options.timeout) == ("local", "L4", 60.0)
    assert options.env == {"BASE": "b", "SEED": "1"} and options.volumes == (("data", "/data"),)


def test_configuration_fills_in_what_the_function_does_not_say() -> None:
    options = resolve({}, Thither(gpu="A100", timeout=5), "owner")
    assert (options.gpu, options.timeout) == ("A100", 5.0)
    assert resolve({"timeout": 0}, Thither(timeout=5), "owner").timeout == 0.0


def test_backend_options_reach_their_backend_only() -> None:
    assert resolve({"backend": "modal", "pip": ["torch"], "cpu": 2}, Thither(), "o").extra["pip"] == ["torch"]
    with pytest.raises(ThitherUsageError, match="--pip is an option of the 'modal' backend"):
        resolve({"pip": "torch"}, Thither(), "@thither train")


@pytest.mark.parametrize(("options", "message"), [
    ({"gpus": "L4"}, "unknown option gpus=; the options are: backend, gpu, timeout, env, volumes, secrets"),
    ({"out": "x"}, "out= is not an option of a function"),
    ({"bg": True}, "call .spawn"),
    ({"detach": True}, "detached runs are for %%thither --bg cells only"),
    ({"env": ["A=1"]}, "env= takes a dict"),
    ({"timeout": -1}, "--timeout -1.0: give 0"),
    ({"backend": "nowhere"}, "--backend 'nowhere' is not available"),
    ({"volumes": ["no-path"]}, "NAME:/absolute/path"),
])
def test_bad_options_are_refused_when_the_function_is_decorated(options: dict, message: str) -> None:
    with pytest.raises(ThitherUsageError) as raised:
        thither(**options)
    assert message in str(raised.value) and str(raised.value).startswith("@thither(")


def test_a_decorated_function_stays_a_function_here() -> None:
    @thither(timeout=10)
    def double(x: int) -> int:
        """Doubles."""
        return 2 * x

    assert double.local(4) == 8 and double.__doc__ == "Doubles." and double.__name__ == "double"
    assert repr(double).startswith("<thither function ") and "timeout=10" in repr(double)
    with pytest.raises(ThitherUsageError, match="decorates a function"):
        thither()(3)
