import textwrap
def c(s): return textwrap.dedent(s).strip("\n")

def test_probe(run_notebook, workdir):
    cells = run_notebook([
        "factor = 3\npairs = [(1, 2), (3, 4)]\nimport numpy as np\narr = np.zeros(3)",
        c("""
            %%thither
            class C:
                attr = factor
            r_cls = C.attr
            for i, j in pairs:
                pass
            import os.path
            from collections import OrderedDict as OD
            def f(q):
                !echo inner {q} $q
            f(5)
            for t in range(2):
                !echo loop {t}
            here = 'x'
            y = !echo {here}
            arr[0] = 9
            async def agen():
                yield 1
                yield 2
            acc = [v async for v in agen()]
            1 + 1;  # comment
        """),
        "print(r_cls, i, j, os.path.join('a','b'), OD.__name__, list(y), arr, acc)",
        c("""
            %%thither
            def g():
                raise RuntimeError('in g')
            g()
        """),
        c("""
            %%thither
            import sys
            print('out')
            print('err', file=sys.stderr)
            x_tr = 5
            x_tr
        """),
        "%%thither --out missing_name\nq = 1",
        "%%thither\nimport pandas" ,
    ])
    for i, cell in enumerate(cells):
        print(i, cell.outputs)
