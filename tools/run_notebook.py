"""Execute Projet_deep_learning.ipynb top to bottom with papermill, then strip execution noise.

    python tools/run_notebook.py                      # full run with the notebook's defaults, in place
    python tools/run_notebook.py -p STEPS 20 -o /tmp/smoke.ipynb   # a quick smoke run elsewhere

Cleaning removes what changes from run to run without meaning anything (papermill metadata,
execution timestamps, kernel ids), so the committed notebook diffs only when results change.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).resolve().parents[1] / "Projet_deep_learning.ipynb"


def clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if not cell.metadata.get("tags", True):  # papermill adds "tags": [] everywhere
            cell.metadata.pop("tags")
    nbformat.write(nb, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=NOTEBOOK, help="where to write the executed notebook")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a parameter (VALUE is a Python literal, or a plain string)")
    # The training cell trains three models: about 17 minutes alone on 2 cores, and it ran past 30 minutes
    # once while a benchmark shared the cores. An hour leaves room for a slower laptop.
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    args = parser.parse_args()

    import papermill

    params = {}
    for name, value in args.parameter:
        try:
            params[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[name] = value
    papermill.execute_notebook(str(NOTEBOOK), str(args.output), parameters=params, cwd=str(NOTEBOOK.parent),
                               kernel_name="python3", progress_bar=False, execution_timeout=args.timeout,
                               log_output=False)
    clean(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
