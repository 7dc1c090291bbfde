def test_fixture_runs_a_thither_cell(run_notebook):
    (cell,) = run_notebook(["%%thither\nprint('hi')"])
    assert cell.stdout == "hi\n"


def test_live_kernel_runs_a_cell(live_kernel):
    kernel = live_kernel()
    assert kernel.run("%%thither\nprint(6*7)").stdout == "42\n"
