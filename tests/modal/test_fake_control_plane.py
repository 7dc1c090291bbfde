"""Self-tests of the offline Modal fake: the REAL modal client (1.6.4) and the REAL container runtime
(`python -m modal._container_entrypoint` in a subprocess) talking to tests/modal/fake_modal on loopback.

Functions are defined inside the tests and registered with `serialized=True`, so cloudpickle ships them
by value: the container never imports this module (it cannot: the project root is off its sys.path).
"""

from __future__ import annotations

import time

import modal
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)


def _containers_for(fake, function_id: str) -> list:
    # note: Function handles are dehydrated when `app.run()` exits; take `f.object_id` inside the block
    return [c for c in list(fake.containers.values()) if c.function_id == function_id]


def _wait_app_containers_gone(fake, app_id: str, timeout: float = 10.0) -> None:
    fake.wait_for(lambda: not any(c.alive for c in list(fake.containers.values()) if c.app_id == app_id), timeout)


def test_remote_lambda(fake_modal):
    app = modal.App()
    f = app.function(serialized=True)(lambda x: x * 2)
    mark = fake_modal.mark()
    with app.run():
        assert f.remote(21) == 42
        assert f.remote(5) == 10  # the warm container takes the second input
        app_id, fid = app.app_id, f.object_id
    calls = fake_modal.calls_since(mark)
    for rpc in ("AppCreate", "FunctionCreate", "AppPublish", "FunctionMap", "FunctionGetOutputs",
                "ContainerHello", "FunctionGetInputs", "FunctionPutOutputs", "AppClientDisconnect"):
        assert rpc in calls, rpc
    (rec,) = _containers_for(fake_modal, fid)
    assert len(rec.served_inputs) == 2
    # the app going away stops its containers (kill_switch through FunctionGetInputs -> clean exit)
    _wait_app_containers_gone(fake_modal, app_id)
    assert rec.returncode == 0, rec.stderr
    assert not fake_modal.state.unimplemented


def test_spawn_get_and_cancel_terminates_container(fake_modal):
    app = modal.App()

    def hello(x):
        print(f"hello from the container: {x}", flush=True)
        return {"x": x}

    def sleeper(seconds):
        import time

        print("going to sleep", flush=True)
        time.sleep(seconds)
        return "woke up"

    f_hello = app.function(serialized=True)(hello)
    f_sleep = app.function(serialized=True, timeout=300)(sleeper)
    with app.run():
        fc = f_hello.spawn(7)
        assert fc.get(timeout=30) == {"x": 7}
        assert fc.get(timeout=5) == {"x": 7}  # .get() does not consume the output
        (rec,) = _containers_for(fake_modal, f_hello.object_id)
        fake_modal.wait_for(lambda: "hello from the container: 7" in rec.stdout, 5)

        fc = f_sleep.spawn(60)
        with pytest.raises(TimeoutError):  # builtin TimeoutError, as documented
            fc.get(timeout=0.5)
        (sleeping,) = fake_modal.wait_for(lambda: _containers_for(fake_modal, f_sleep.object_id), 10)
        fake_modal.wait_for(lambda: "going to sleep" in sleeping.stdout, 10)
        assert sleeping.alive

        t0 = time.monotonic()
        fc.cancel(terminate_containers=True)
        fake_modal.wait_for(lambda: not sleeping.alive, 5)
        took = time.monotonic() - t0
        assert took < 5
        assert "FunctionCallCancel" in fake_modal.calls
        (cancel,) = [r for r in fake_modal.requests("FunctionCallCancel") if r.function_call_id == fc.object_id]
        assert cancel.terminate_containers
        assert sleeping.terminated_by and sleeping.returncode != 0
        with pytest.raises(modal.exception.RemoteError):
            fc.get(timeout=5)


def test_cancel_without_terminate_reaches_user_code(fake_modal):
    """terminate_containers=False: the cancellation rides on ContainerHeartbeat (held open by the fake)
    and raises InputCancellation inside the function; the container survives and takes the next input.

    The cancel is sent only once the function prints that it is asleep: a cancellation signal that lands
    while the container runtime is still setting the input up (before user code) is raised outside the
    runtime's exception handler and ends the container, which is the client's behaviour, not the fake's."""
    app = modal.App()

    def nap(seconds):
        import time

        print("napping", flush=True)
        time.sleep(seconds)
        return seconds

    f = app.function(serialized=True, timeout=300)(nap)
    with app.run():
        fc = f.spawn(60)
        (rec,) = fake_modal.wait_for(lambda: _containers_for(fake_modal, f.object_id), 10)
        fake_modal.wait_for(lambda: "napping" in rec.stdout, 10)
        t0 = time.monotonic()
        fc.cancel()
        with pytest.raises(modal.exception.RemoteError):
            fc.get(timeout=10)
        assert time.monotonic() - t0 < 5
        assert rec.alive and not rec.terminated_by
        assert f.remote(0.1) == 0.1
        assert len(_containers_for(fake_modal, f.object_id)) == 1


def test_queue_from_inside_the_function(fake_modal):
    app = modal.App()

    def producer(q, n):
        import time

        q.put_many(list(range(n)))
        time.sleep(1.0)  # the client must see the first batch while the call still runs
        q.put_many(list(range(n, 2 * n)))
        return q.len()

    f = app.function(serialized=True)(producer)
    with app.run():
        with modal.Queue.ephemeral() as q:
            fc = f.spawn(q, 5)
            first = q.get_many(5, timeout=30)
            assert first == [0, 1, 2, 3, 4]
            with pytest.raises(TimeoutError):
                fc.get(timeout=0)  # still running: the second batch is not there yet
            rest = []
            while len(rest) < 5:
                rest += q.get_many(5, timeout=10)
            assert rest == [5, 6, 7, 8, 9]
            assert fc.get(timeout=10) in (0, 5)  # q.len() raced with our get_many
            q.put_many(["a", "b"], partition="p")
            assert q.len(partition="p") == 2
            assert list(q.iterate(partition="p", item_poll_timeout=0.2)) == ["a", "b"]
            q.clear(partition="p")
            assert q.len(partition="p") == 0
    for rpc in ("QueueGetOrCreate", "QueuePut", "QueueGet", "QueueLen", "QueueNextItems", "QueueClear"):
        assert rpc in fake_modal.calls, rpc


def test_with_options_binds_params(fake_modal):
    app = modal.App()

    def whoami():
        import os

        return os.environ.get("FAKE_FLAVOR", "")

    f = app.function(serialized=True, timeout=60)(whoami)
    g = f.with_options(gpu="L4", timeout=600, env={"FAKE_FLAVOR": "bound"})
    info = g.info()  # offline: computed client side from the static definition + the options
    assert info.gpus == [("L4", 1)]
    assert info.timeout == 600
    assert f.info().gpus == [] and f.info().timeout == 60
    with app.run():
        assert f.remote() == ""
        assert g.remote() == "bound"  # with_options(env=) -> ephemeral Secret -> container env
        fid, gid = f.object_id, g.object_id
    (bind,) = [r for r in fake_modal.requests("FunctionBindParams") if r.function_id == fid]
    assert bind.function_options.resources.gpu_config.gpu_type == "L4"
    assert bind.function_options.resources.gpu_config.count == 1
    assert bind.function_options.timeout_secs == 600
    bound = fake_modal.state.functions[gid]
    assert bound["base_function_id"] == fid
    assert bound["definition"].resources.gpu_config.gpu_type == "L4"
    assert bound["definition"].timeout_secs == 600


def test_large_payloads_go_through_blobs(fake_modal):
    app = modal.App()

    def echo_sizes(n_out, payload):
        return b"r" * n_out, len(payload)

    f = app.function(serialized=True)(echo_sizes)
    mark = fake_modal.mark()
    with app.run():
        data, n = f.spawn(3 * 1024 * 1024, b"a" * (20 * 1024)).get(timeout=60)  # > 8 KiB spawn args
        assert (len(data), n) == (3 * 1024 * 1024, 20 * 1024)
        data, n = f.remote(16, b"b" * (3 * 1024 * 1024))  # > 2 MiB .remote() args
        assert (data, n) == (b"r" * 16, 3 * 1024 * 1024)
        fid = f.object_id
    calls = fake_modal.calls_since(mark)
    assert calls.count("BlobCreate") >= 3 and calls.count("BlobGet") >= 3
    inputs = [fake_modal.state.inputs[i] for i in fake_modal.state.function_calls
              for i in fake_modal.state.function_calls[i].input_ids
              if fake_modal.state.inputs[i].function_id == fid]
    assert all(inp.input.args_blob_id for inp in inputs)
    assert inputs[0].output.result.data_blob_id  # 3 MiB result went up as a blob


def test_remote_exception_and_container_isolation(fake_modal):
    app = modal.App()

    def probe():
        import os
        import sys

        found = {}
        for name in ("tests", "mini_magic"):
            try:
                __import__(name)
                found[name] = True
            except ImportError:
                found[name] = False
        return found, os.getcwd(), list(sys.path), os.environ.get("MODAL_TOKEN_ID")

    def boom():
        raise ValueError("kaputt")

    f_probe = app.function(serialized=True)(probe)
    f_boom = app.function(serialized=True)(boom)
    with app.run():
        found, cwd, path, token = f_probe.remote()
        with pytest.raises(ValueError, match="kaputt"):
            f_boom.remote()
    # mini_magic is linked in (standing in for the image's add_local_python_source); the repo and tests are not.
    assert found == {"tests": False, "mini_magic": True}
    assert token is None
    assert str(Path(__file__).parents[2]) not in path and cwd.startswith(str(fake_modal.state.workdir))


def test_map_and_generator(fake_modal):
    """Beyond the brief: `.map()` (FunctionPutInputs path) and generators (FunctionCallPut/GetDataOut)."""
    app = modal.App()

    def square(x):
        return x * x

    def count(n):
        yield from range(n)

    f = app.function(serialized=True)(square)
    g = app.function(serialized=True)(count)
    with app.run():
        assert list(f.map(range(6))) == [0, 1, 4, 9, 16, 25]
        assert list(g.remote_gen(4)) == [0, 1, 2, 3]
    assert "FunctionCallPutDataOut" in fake_modal.calls and "FunctionCallGetDataOut" in fake_modal.calls
