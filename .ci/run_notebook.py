"""Execute a notebook in a real kernel and print what each cell showed (text only). Exit 1 on an unexpected error.

Cells tagged ``raises-exception`` may fail (they demonstrate errors); any other error fails the run. The kernel runs
in the notebook's own folder, as in Jupyter and under nbval.

    python .ci/run_notebook.py notebooks/quickstart.ipynb notebooks/quickstart.executed.ipynb
    python .ci/run_notebook.py notebooks/live-training.ipynb notebooks/live-training.ipynb   # refresh the committed
                                                                                           # outputs (nbval checks)
"""

from __future__ import annotations

import os
import sys

import nbformat
from nbclient import NotebookClient


def main(source: str, target: str) -> int:
    nb = nbformat.read(source, as_version=4)
    folder = os.path.dirname(os.path.abspath(source))
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": folder}}).execute()
    nbformat.write(nb, target)
    failed = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        print(f"\n\x1b[1mIn [{cell.execution_count}]:\x1b[0m {cell.source}")
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                print(out.text, end="")
            elif out.output_type == "error":
                print(f"{out.ename}: {out.evalue}")
                if "raises-exception" not in cell.metadata.get("tags", []):
                    failed = True
            else:
                data = out.get("data", {})
                shown = [m for m in data if m != "text/plain"]
                print(data.get("text/plain", ""), f"[{', '.join(shown)}]" if shown else "")
    print(f"\nsaved {target}")
    if failed:
        print("a cell failed unexpectedly", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
