"""Screen recipe options on validation accuracy only: the test set is not evaluated.

    python benchmarks/screen.py '{"cutout10": {"cutout": 10}, "ema": {"vat_target": "ema"}}' --draws 1
    python benchmarks/screen.py --table-only

Each variant is a name and TrainConfig overrides on top of ``--base`` (JSON, default: none, the
default recipe); draw k uses data_seed=k and seed=k. Each record keeps its full config, so the
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
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import vatlib  # noqa: E402
from benchmark import _append, _key, _load, machine_info, same_config  # noqa: E402

BASE: Dict = {}


def screen_table(records: List[Dict]) -> str:
    lines = ["| variant | draw | overrides | best validation acc., % (step) | final-step validation, % | train s |",
             "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['name']} | {r['draw']} | {json.dumps(r['overrides'])} | {100 * r['best']['val_acc']:.1f} "
                     f"({r['best']['step']}) | {100 * r['final']['val_acc']:.1f} | {r['train_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="?", default="{}", help="JSON: name -> TrainConfig overrides")
    parser.add_argument("--draws", default="1", help="comma-separated draws (data_seed = seed = k)")
    parser.add_argument("--base", default=json.dumps(BASE), help="JSON overrides shared by every variant")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "screen.json"))
    parser.add_argument("--runs", default="runs/screen")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    results = Path(args.results)
    if not args.table_only:
        base = json.loads(args.base)
        for name, overrides in json.loads(args.variants).items():
            for draw in map(int, args.draws.split(",")):
                cfg = vatlib.TrainConfig(**{**base, "steps": args.steps, **overrides, "data_seed": draw, "seed": draw,
                                            "report_test": False, "progress": False,
                                            "out": str(Path(args.runs) / f"{name}-draw{draw}")})
                if any(same_config(r["config"], cfg) for r in _load(results)):  # afresh: another screen may share it
                    print(f"{name} draw {draw}: already in {results}", flush=True)
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] {name} draw {draw} ...", flush=True)
                result = vatlib.train(cfg, overwrite=True)
                record = {"name": name, "draw": draw, "overrides": {**base, **overrides}, "config": _key(cfg),
                          "best": result.best, "final": result.final, "train_s": result.history[-1]["time_s"],
                          "history": [{k: h[k] for k in ("step", "val_acc")} for h in result.history],
                          "machine": machine_info()}
                if cfg.members > 1:  # an ensemble: each member's own choice on validation, beside their average's
                    record["members"] = [{k: m[k] for k in ("seed", "step", "val_acc")}
                                         for m in vatlib.load_checkpoint(result.checkpoint)["members"]]
                _append(results, record)
                print(f"    best validation {result.best['val_acc']:.2%} at step {result.best['step']}, "
                      f"final {result.final['val_acc']:.2%}", flush=True)
    print(screen_table(_load(results)))


if __name__ == "__main__":
    main()
