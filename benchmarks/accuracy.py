"""The accuracy benchmark: every method on every labelled draw, one record per run, resumable.

Draw k uses data_seed=k and seed=k, so both the 100 labelled images and the training randomness change. Each run's
record (its config, best and final evaluations, history, times and machine) is added to the results file as soon
as the run ends; a run already recorded under the method's name with the same recipe
(``vatlib.records.same_config``) is skipped, so an interrupted benchmark resumes where it stopped, and a run
interrupted in its folder is continued from its ``last.pth``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional, Tuple

import vatlib
from benchmarks.methods import known_methods, method_config, method_name, recorded
from benchmarks.tables import draw_list, tables
from vatlib.records import append, key, load, machine_info


def plan(records: List[dict], names: List[str], args: argparse.Namespace) -> str:
    """One line per method: the draws asked for, those already recorded (skipped) and those to train.
    It shows at once a count read as a draw number (``--draws 3`` is draws 0-2, not draw 3)."""
    lines = []
    for name in names:
        todo = [d for d in args.draws if not recorded(records, name, method_config(name, d, args))]
        done = [d for d in args.draws if d not in todo]
        lines.append(f"{name}: draws {draw_list(args.draws)}; already in {args.results}: "
                     f"{draw_list(done) or 'none'}; to train: {draw_list(todo) or 'none'}")
    return "\n".join(lines)


def train_or_resume(cfg: vatlib.TrainConfig, data: vatlib.ImageData) -> Tuple[vatlib.TrainResult, Optional[int]]:
    """Train ``cfg``, continuing the interrupted run in its folder when that run has this config and these data
    (a long run, e.g. the paper preset's 50,000 steps, can then span several benchmark invocations); otherwise the
    folder is scratch and is replaced. Returns the result and the step it resumed from (None: from the start)."""
    last = Path(cfg.out) / "last.pth"
    if last.exists():
        started: List[int] = []
        try:
            res = vatlib.train(cfg, data=data, resume=True, on_start=lambda run: started.append(run.step))
            return res, started[0]
        except (ValueError, vatlib.CheckpointError) as e:
            if started:  # the run itself failed, after resuming: not a folder to start again
                raise
            print(f"    not resuming {last} ({e}); starting it again", flush=True)
    return vatlib.train(cfg, data=data, overwrite=True), None


def run_accuracy(args: argparse.Namespace) -> None:
    """``benchmark.py accuracy``: train what is not yet recorded, then print the tables of every method asked."""
    results = Path(args.results)
    names = known_methods([method_name(m, args) for m in args.methods.split(",")])
    data = vatlib.load_dataset(args.dataset, args.data_root)
    print(plan(load(results), names, args), flush=True)
    for name in names:
        for draw in args.draws:
            cfg = method_config(name, draw, args)
            if recorded(load(results), name, cfg):  # read afresh: another benchmark may share the file
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name} draw {draw} ...", flush=True)
            t0 = time.perf_counter()
            res, resumed_from = train_or_resume(cfg, data)
            wall = time.perf_counter() - t0
            train_time = res.history[-1]["time_s"]
            record = {"method": name, "draw": draw, "config": key(cfg), "best": res.best, "final": res.final,
                      "wall_s": round(wall, 1), "train_s": train_time, "steps": cfg.steps,
                      "steps_per_s": round(cfg.steps / train_time, 2), "history": res.history,
                      "machine": machine_info()}
            if args.note:
                record["note"] = args.note
            if resumed_from is not None:  # wall_s is this part's; train_s (the history's clock) is the whole run's
                record["resumed_from_step"] = resumed_from
            append(results, record)
            print(f"    test {res.best['test_acc']:.2%} (best val, step {res.best['step']}), "
                  f"final {res.final['test_acc']:.2%}, {wall:.0f} s", flush=True)
    print(tables(load(results), names, args))
