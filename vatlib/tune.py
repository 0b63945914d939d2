"""Choosing settings on the validation split: short runs over a grid, one table, one winner.

    python -m vatlib tune --dataset FashionMNIST --eps 0.5,1,2,4,8 --entmin-weight 0,1

Every ``TrainConfig`` field takes a comma-separated list here; the fields given more than one value
form the grid, and every combination is trained (``steps`` short, 1,000 by default) on each of the
given labelled draws (``--draws 2`` is draws 0 and 1, ``--draws 3-4`` draws 3 and 4; draw k is
data_seed = seed = k). Each combination is scored by the
validation accuracy of its best-on-validation checkpoint, averaged over the draws; the test set is
not even evaluated (``report_test=False``). Results go to ``<out>/tune.json`` after every run, so
an interrupted tune continues where it stopped, and the winner is printed as the command that
trains it with the full recipe.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .checkpoint import write_json
from .config import TrainConfig, draw_config
from .data import ImageData, load_dataset
from .records import key, same_config
from .runs import train

__all__ = ["tune", "tune_table"]


def tune(base: TrainConfig, grid: Dict[str, Sequence[Any]], *, draws: Sequence[int] = (0,), out: str = "runs/tune",
         data: Optional[ImageData] = None, log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Train ``base`` with every combination of ``grid`` on each draw; returns one record per combination, best first.

    A record: ``{"params": {field: value}, "val_acc": mean, "val_accs": [per draw], "final_val_accs": [...],
    "best_steps": [...]}``. Runs already in ``<out>/tune.json`` with the same config are not trained again.
    """
    unknown = [k for k in grid if k not in {f.name for f in dataclasses.fields(TrainConfig)}]
    if unknown or not grid:
        raise ValueError(f"grid fields {unknown or '(none)'} are invalid; allowed: TrainConfig fields, each with a list of values")
    folder = Path(out)
    results_path = folder / "tune.json"
    runs: List[Dict[str, Any]] = json.loads(results_path.read_text()) if results_path.exists() else []
    if data is None:
        data = load_dataset(base.dataset, base.data_root)
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]

    def run_config(combo: Dict[str, Any], k: int) -> TrainConfig:
        """The short run of one combination on draw k: no test evaluation, in its own scratch folder."""
        name = "-".join(f"{f}{v}" for f, v in combo.items()) + f"-draw{k}"
        return draw_config(base, k, **combo, report_test=False, progress=False, out=str(folder / name))

    for combo in combos:
        for k in draws:
            run_config(combo, k).validate()  # every combination, before the first run
    for combo in combos:
        for k in draws:
            cfg = run_config(combo, k)
            name = Path(cfg.out).name
            if any(same_config(r["config"], cfg) for r in runs):
                continue
            result = train(cfg, data=data, overwrite=True)  # the tune's own scratch run
            runs.append({"params": combo, "draw": k, "config": key(cfg), "val_acc": result.best["val_acc"],
                         "best_step": result.best["step"], "final_val_acc": result.final["val_acc"]})
            write_json(results_path, runs)
            log(f"  {name}: best validation accuracy {result.best['val_acc']:.2%} (step {result.best['step']})")
    records = []
    for combo in combos:
        mine = [r for r in runs if r["params"] == combo and r["draw"] in draws
                and same_config(r["config"], run_config(combo, r["draw"]))]
        mine.sort(key=lambda r: r["draw"])
        records.append({"params": combo, "val_acc": statistics.mean(r["val_acc"] for r in mine),
                        "val_accs": [r["val_acc"] for r in mine], "final_val_accs": [r["final_val_acc"] for r in mine],
                        "best_steps": [r["best_step"] for r in mine]})
    records.sort(key=lambda r: -r["val_acc"])  # stable: among equal scores the earlier combination stays first
    return records


def tune_table(records: List[Dict[str, Any]]) -> str:
    """Markdown table of ``tune``'s records (validation accuracies only; the test set is not used)."""
    fields = list(records[0]["params"])
    lines = ["| " + " | ".join(fields) + " | validation acc., mean % | per draw, % | final-step validation, % |",
             "|" + "---|" * (len(fields) + 3)]
    for r in records:
        lines.append("| " + " | ".join(f"{r['params'][f]:g}" if isinstance(r['params'][f], float) else str(r['params'][f])
                                       for f in fields)
                     + f" | {100 * r['val_acc']:.2f} | {' '.join(f'{100 * a:.2f}' for a in r['val_accs'])} | "
                     + f"{' '.join(f'{100 * a:.2f}' for a in r['final_val_accs'])} |")
    return "\n".join(lines)
