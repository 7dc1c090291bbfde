"""The documented limits a notebook cell may be tagged with (cell metadata ``fidelity-limit: <key>``).

Each key quotes README.md word for word (test_limits_table checks the quote is still there), so a cell can only be
excused by a limit a user can read about, and rewording the README without updating the harness fails a test
instead of silently excusing cells.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    readme: str  # a verbatim quote from README.md
    workaround: str


LIMITS: dict[str, Limit] = {
    "method-call-mutation": Limit(  # only for inputs too large to checksum (over 8 MiB pickled)
        readme="a change to it by a method call is not seen (**name it in `--out`**)",
        workaround="name the object in --out (`%%thither --out big`), or rebind it (`model = model.fit(X, y)`)",
    ),
    "in-place-change-new-object": Limit(
        readme="other notebook references to the old object do not see the change",
        workaround="read the object through the name the cell changed, or capture the other reference in the cell",
    ),
    "value-cannot-travel": Limit(
        readme="A value that cannot travel back is named in a warning and the other names are still assigned",
        workaround="keep the generator, file or lock inside the cell that uses it; bring back plain data",
    ),
    "error-assigns-nothing": Limit(
        readme="line numbers and source. Nothing is assigned.",
        workaround="split the cell before the line that may raise, so the names bound before it are kept",
    ),
    "magics-refused": Limit(
        readme="`%magics` inside a thither cell are refused before running",
        workaround="run the magic in a normal cell, or use its Python API (timeit.timeit, os.chdir)",
    ),
    "star-import-refused": Limit(
        readme="**`from module import *`** in a `%%thither` cell is refused before it runs",
        workaround="import the names you use (`from module import a, b`)",
    ),
    "module-state-in-worker": Limit(
        readme="Not covered: other state inside third-party modules a cell imported",
        workaround="set module state (np.random.seed, pd.set_option, torch.manual_seed) in the cell that relies "
                   "on it, or keep a seeded Generator (np.random.default_rng(0)) in a variable",
    ),
}
