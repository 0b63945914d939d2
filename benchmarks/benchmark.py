"""Benchmarks: accuracy over labelled draws (and time to accuracy), one training step, and the training loop.

    python benchmarks/benchmark.py accuracy [--methods supervised,vat,default,small-long] [--draws 5] [--set eps=4]
    python benchmarks/benchmark.py step [--repeats 30]
    python benchmarks/benchmark.py loop --baseline REV [--presets default,vat,paper] [--steps 3000] [--eval-every 250]
    python benchmarks/benchmark.py results [--check]     # benchmarks/RESULTS.md from benchmarks/results/*.json

`accuracy` (benchmarks/accuracy.py) trains every method (benchmarks/methods.py) on every labelled draw and
prints two markdown tables (benchmarks/tables.py): the test accuracy of the checkpoint chosen on validation and of
the final step, with wall time and speed; and the time to accuracy, the training time until the test accuracy
first reaches 98 %, 98.5 % and 99 % (reporting only: nothing is chosen by it). Raw results go to a JSON file after
every run; an interrupted benchmark resumes where it stopped.

`step` and `loop` (benchmarks/speed.py) time one training step of every preset, and compare `python -m vatlib
train --preset P` of a git revision with this tree (same history number for number? steps/s).

`results` (benchmarks/report.py) writes benchmarks/RESULTS.md from the results files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

if __package__ in (None, ""):  # run as a script (python benchmarks/benchmark.py): the repository root is the package's
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import vatlib  # noqa: E402
from benchmarks.accuracy import run_accuracy  # noqa: E402
from benchmarks.methods import METHODS, known_methods, method_name, set_option  # noqa: E402
from benchmarks.report import write_results  # noqa: E402
from benchmarks.speed import run_loop, run_step  # noqa: E402
from benchmarks.tables import tables  # noqa: E402
from vatlib.records import load  # noqa: E402


def parse_draws(text: str) -> List[int]:
    """--draws, as everywhere in the project (vatlib.parse_draws): "10" -> 0-9, "8-9" -> 8 and 9, "2,5" -> 2 and 5."""
    try:
        return vatlib.parse_draws(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    acc = sub.add_parser("accuracy", help="methods x labelled draws -> tables + JSON")
    acc.add_argument("--methods", default="supervised,vat,default,small-long",
                     help=f"comma-separated, from {list(METHODS)}")
    acc.add_argument("--draws", type=parse_draws, default=parse_draws("5"),
                     help="a count N (draws 0..N-1, the default 5), a range A-B or a list A,B")
    acc.add_argument("--note", default="", help="a remark stored with each new record, e.g. that two runs shared the "
                                                "cores")
    acc.add_argument("--results", default="benchmarks/results/accuracy.json", help="raw results (JSON), read and "
                                                                                    "extended")
    acc.add_argument("--runs", default="runs/bench", help="scratch folder for each run's checkpoints (replaced, "
                     "unless it holds this very run interrupted: that is resumed)")
    acc.add_argument("--table-only", action="store_true", help="print the tables of the results file, train nothing")
    acc.add_argument("--thresholds", type=lambda t: [float(v) for v in t.split(",")], default=None,
                     help="test accuracies of the time-to-accuracy table (default: 0.98,0.985,0.99)")
    acc.add_argument("--set", type=set_option, default="",
                     help="TrainConfig overrides for every method, e.g. eps=4,pool_first=true (booleans: True or "
                          "False, any case; recorded in the method's name: 'default (eps=4.0)')")
    step = sub.add_parser("step", help="time one training step of every preset, the default without VAT and "
                                       "textbook VAT")
    step.add_argument("--repeats", type=int, default=30)
    step.add_argument("--warmup", type=int, default=5)
    step.add_argument("--results", default="benchmarks/results/step.json")
    step.add_argument("--experiment", action="append", default=[], help="a file under benchmarks/experiments/ to "
                      "import first (it registers its models)")
    step.add_argument("--models", default="", help="registered models to time in the default recipe too, "
                      "comma-separated")
    loop = sub.add_parser("loop", help="`python -m vatlib train --preset P` at a git revision vs this tree")
    loop.add_argument("--baseline", required=True, help="git revision to compare with, e.g. 75ffb15")
    loop.add_argument("--presets", default="default", help=f"comma-separated, from {list(vatlib.PRESETS)} (each must "
                                                            "exist at the baseline too)")
    loop.add_argument("--steps", type=int, default=3000)
    loop.add_argument("--eval-every", type=int, default=250)
    loop.add_argument("--repeats", type=int, default=1, help="runs of each, alternating")
    loop.add_argument("--results", default="benchmarks/results/loop.json")
    res = sub.add_parser("results", help="write benchmarks/RESULTS.md from the results files")
    res.add_argument("--check", action="store_true", help="only check that benchmarks/RESULTS.md is up to date")
    for sp in (acc, step, loop):
        sp.add_argument("--dataset", default="MNIST")
        sp.add_argument("--data-root", default="data")
        sp.add_argument("--device", default="auto" if sp is not loop else "cpu")
        sp.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = one per core)")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = parser().parse_args(argv)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    if args.what == "results":
        write_results(check=args.check)
    elif args.what == "accuracy" and args.table_only:  # --methods may name variants: "supervised;default (eps=4.0)"
        names = known_methods([method_name(m, args) for m in args.methods.split(";" if ";" in args.methods else ",")])
        try:
            print(tables(load(Path(args.results)), names, args))
        except ValueError as e:  # a name's overrides that are no TrainConfig field (an option since removed)
            raise SystemExit(str(e)) from None
    elif args.what == "accuracy":
        run_accuracy(args)
    elif args.what == "step":
        run_step(args)
    else:
        run_loop(args)


if __name__ == "__main__":
    main()
