def test_fixture_runs_a_thither_cell(run_notebook):
    (cell,) = run_notebook(["%%thither\nprint('hi')"])
    assert cell.stdout == "hi\n"


def test_live_kernel_runs_a_cell(live_kernel):
    kernel = live_kernel()
    assert kernel.run("%%thither\nprint(6*7)").stdout == "42\n"


def test_kernels_and_workers_run_in_the_environment_under_test(run_notebook):
    """The lowest-versions run (.ci/test) proves something only if its kernels and workers use ITS interpreter and
    packages, not whatever `python3` kernel spec or interpreter is found first on the machine."""
    import sys

    import cloudpickle
    import ipykernel
    import IPython

    expected = f"{sys.executable} {ipykernel.__version__} {IPython.__version__} {cloudpickle.__version__}"
    probe = ("import sys, ipykernel, IPython, cloudpickle\n"
             "print(sys.executable, ipykernel.__version__, IPython.__version__, cloudpickle.__version__)")
    kernel, worker = run_notebook([probe, "%%thither\nimport sys, cloudpickle\nprint(sys.executable, cloudpickle.__version__)"])
    assert kernel.stdout.strip() == expected
    assert worker.stdout.split() == [sys.executable, cloudpickle.__version__]
