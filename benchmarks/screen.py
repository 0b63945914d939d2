"""Screen recipe options on validation accuracy only: the test set is not evaluated.

    python benchmarks/screen.py '{"eps2": {"eps": 2.0}, "wd": {"weight_decay": 0.05}}' --draws 3,8
    python benchmarks/screen.py '{"conf0.1": {"term_weights": {"confidence": 0.1}}}' \
        --experiment benchmarks/experiments/example_term.py --draws 3,8
    python benchmarks/screen.py --table-only

Each variant is a name and TrainConfig overrides on top of ``--base`` (JSON, default: none) on top of
``--preset`` (default: the default recipe); draw k uses data_seed=k and seed=k. A run interrupted in its
folder (a session's end, Ctrl-C) is resumed by the next invocation of the same screen. Each record keeps its full config, so the
records made on top of earlier defaults stay what they were. Every run
writes its record (config, history of validation accuracies, best and final) to the results file as
soon as it ends (added to the file as it is on disk, under the benchmark's lock, so two screens can share it),
and a variant already recorded with the same config is skipped, so an interrupted
screen resumes. This is how recipe options were chosen or dropped: by validation accuracy, never by
test accuracy (``report_test=False``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict

if __package__ in (None, ""):  # run as a script: the repository root on the path, for ``benchmarks``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vatlib  # noqa: E402
from benchmarks.accuracy import train_or_resume  # noqa: E402
from benchmarks.methods import import_experiment  # noqa: E402
from vatlib.records import append, key, load, machine_info, same_config, screen_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

BASE: Dict = {}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="?", default="{}", help="JSON: name -> TrainConfig overrides")
    parser.add_argument("--draws", default="1-1", help="a count N (draws 0..N-1), a range A-B or a list A,B (draw k: "
                                                       "data_seed = seed = k; default: draw 1)")
    parser.add_argument("--experiment", action="append", default=[],
                        help="a file under benchmarks/experiments/ to import first (it registers its terms)")
    parser.add_argument("--base", default=json.dumps(BASE), help="JSON overrides shared by every variant")
    parser.add_argument("--preset", default="default", help="the recipe the variants change (default: default)")
    parser.add_argument("--steps", type=int, default=None, help="updates per run (default: the preset's)")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "screen.json"))
    parser.add_argument("--runs", default="runs/screen")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    results = Path(args.results)
    for path in args.experiment:  # e.g. a term registered with vatlib.register_term
        import_experiment(path)
    if not args.table_only:
        base = json.loads(args.base)
        steps = {"steps": args.steps} if args.steps is not None else {}
        data = None
        for name, overrides in json.loads(args.variants).items():
            for draw in vatlib.parse_draws(args.draws):
                cfg = vatlib.draw_config(vatlib.preset_config(args.preset, **{**base, **steps, **overrides}), draw,
                                         report_test=False, progress=False, out=str(Path(args.runs) / f"{name}-draw{draw}"))
                if any(same_config(r["config"], cfg) for r in load(results)):  # afresh: another screen may share it
                    print(f"{name} draw {draw}: already in {results}", flush=True)
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] {name} draw {draw} ...", flush=True)
                data = data if data is not None else vatlib.load_dataset(cfg.dataset, cfg.data_root)
                result, resumed_from = train_or_resume(cfg, data)  # a long run spans several invocations
                record = {"name": name, "draw": draw, "preset": args.preset, "overrides": {**base, **steps, **overrides},
                          "config": key(cfg),
                          "best": result.best, "final": result.final, "train_s": result.history[-1]["time_s"],
                          "history": [{k: h[k] for k in ("step", "val_acc")} for h in result.history],
                          "machine": machine_info()}
                if args.experiment:
                    record["experiments"] = args.experiment
                if resumed_from is not None:
                    record["resumed_from_step"] = resumed_from
                append(results, record)
                print(f"    best validation {result.best['val_acc']:.2%} at step {result.best['step']}, "
                      f"final {result.final['val_acc']:.2%}", flush=True)
    print(screen_table(load(results)))


if __name__ == "__main__":
    main()
