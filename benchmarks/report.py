"""benchmarks/RESULTS.md, generated from benchmarks/results/*.json (never edited by hand), and the ablation the
notebook shows.

    python benchmarks/benchmark.py results [--check]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import vatlib
from benchmarks.methods import METHODS, current_name, method_config
from benchmarks.speed import loop_table, step_table, step_where
from benchmarks.tables import accuracy_table, draw_list, mean_std, paired_table, paper_table, tables
from vatlib.records import differences, load, same_config, screen_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"

# The options the results tables read the MNIST records with (a method's config, as run by the benchmark's defaults).
RESULTS_ARGS = argparse.Namespace(dataset="MNIST", data_root="data", device="auto", runs="runs/bench", thresholds=None)
FASHION_ARGS = argparse.Namespace(**{**vars(RESULTS_ARGS), "dataset": "FashionMNIST", "thresholds": [0.72, 0.75, 0.77]})
# (with, without) an ingredient, compared draw by draw.
PAIRS = [("default", "default-no-vat"), ("default", "default-no-vat-equal-time")]
# Fashion-MNIST: the default recipe against VAT + entropy minimisation at its tuned eps 2 and against the labels alone.
FASHION_PAIRS = [("default", "vat+ent (eps=2.0)"), ("default", "supervised")]
ABLATION = ("supervised", "vat", "default-no-vat", "default", "small-long", "all-labels")


def ablation_md(methods: Sequence[str] = ABLATION) -> str:
    """The MNIST ablation over labelled draws and the paired comparison, as RESULTS.md gives them (the notebook
    shows it: ``from benchmarks.report import ablation_md``)."""
    records = load(RESULTS / "accuracy.json")
    return (accuracy_table(records, list(methods), RESULTS_ARGS) + "\n\nPaired by draw:\n\n"
            + paired_table(records, PAIRS, RESULTS_ARGS))


def changed(record: Dict, args: argparse.Namespace) -> str:
    """What a record's config set differently from its method's config today, e.g. "eps=1.0, entmin_weight=0.0":
    the recipe fields (``vatlib.config.recipe``) that tell the two apart."""
    diff = differences(record["config"], method_config(record["method"], record["draw"], args))
    return ", ".join(f"{k}={v}" for k, v in diff.items())


def removed_options(config: Dict) -> Dict:
    """The fields of a recorded config that TrainConfig no longer has: options since removed, that were on (the
    records were migrated: one at its off value was dropped)."""
    fields = {f.name for f in dataclasses.fields(vatlib.TrainConfig)}
    return {k: v for k, v in config.items() if k not in fields}


def preset_records(records: List[Dict], preset: str, dataset: str = "MNIST") -> List[Dict]:
    """The records that are runs of ``preset`` on their draw (one per draw, the first recorded), by draw."""
    by_draw: Dict[int, Dict] = {}
    for r in records:
        cfg = vatlib.draw_config(vatlib.preset_config(preset, dataset=dataset), r["draw"])
        if r["draw"] not in by_draw and same_config(r["config"], cfg):
            by_draw[r["draw"]] = r
    return [by_draw[d] for d in sorted(by_draw)]


def presets_table(records: List[Dict], step_records: List[Dict]) -> str:
    """One row per preset (``vatlib.PRESETS``): the benchmark's MNIST records whose config is the preset's, and the
    minutes of a run from the newest step record (the preset's steps x its median step, one machine for all)."""
    step = step_records[-1] if step_records and "steps" in step_records[-1] else None
    lines = ["| preset | benchmark method | draws | test acc. mean ± std, % (checkpoint chosen on validation) | "
             "worst, % | final-step mean ± std, % | minutes per run |", "|---|---|---|---|---|---|---|"]
    for preset in vatlib.PRESETS:
        rows = preset_records(records, preset)
        minutes = "not measured"
        if step and preset in step["median_ms"]:
            minutes = f"{step['steps'][preset] * step['median_ms'][preset] / 60000:.1f}"
        if not rows:
            lines.append(f"| {preset} | not measured | – | – | – | – | {minutes} |")
            continue
        best = [r["best"]["test_acc"] for r in rows]
        names = ", ".join(dict.fromkeys(r["method"] for r in rows))
        lines.append(f"| {preset} | {names} | {draw_list([r['draw'] for r in rows])} | {mean_std(best)} | "
                     f"{100 * min(best):.2f} | {mean_std([r['final']['test_acc'] for r in rows])} | {minutes} |")
    if step:
        lines.append(f"\nMinutes per run: the preset's steps × its median training step (evaluations not included), "
                     f"from the newest step record: {step_where(step)}, device {step['device']}.")
    else:
        lines.append("\nMinutes per run: no step record times every preset yet (`python benchmarks/benchmark.py "
                     "step`).")
    return "\n".join(lines)


def tune_records(runs: List[Dict]) -> List[Dict]:
    """``vatlib.tune``'s records (mean validation accuracy per combination, best first) from its raw runs."""
    combos: Dict[str, List[Dict]] = {}
    for r in sorted(runs, key=lambda r: r["draw"]):
        combos.setdefault(json.dumps(r["params"], sort_keys=True), []).append(r)
    records = [{"params": rs[0]["params"], "val_acc": statistics.mean(r["val_acc"] for r in rs),
                "val_accs": [r["val_acc"] for r in rs], "final_val_accs": [r["final_val_acc"] for r in rs]}
               for rs in combos.values()]
    return sorted(records, key=lambda r: -r["val_acc"])


def accuracy_section(title: str, path: Path, args: argparse.Namespace, pairs: List[Tuple[str, str]]) -> List[str]:
    """One results file's section: its current methods' tables, the paired draws, the paper preset against the
    paper, the rows of options since removed, and the earlier configs of current methods."""
    records = load(path)
    names = list(dict.fromkeys(r["method"] for r in records))
    current = sorted((n for n in names if current_name(n)), key=lambda n: list(METHODS).index(n.partition(" (")[0]))
    # A record holding an option since removed, at a value that was on, is no run of a current method: by its name
    # (e.g. "default (strong_stroke=0.5)") or, under a current name, labelled with that option.
    def options(r: Dict) -> str:
        return ", ".join(f"{k}={v}" for k, v in removed_options(r["config"]).items())

    removed = [r if not current_name(r["method"]) else dict(r, method=f"{r['method']} ({options(r)})")
               for r in records if not current_name(r["method"]) or removed_options(r["config"])]
    kept = [r for r in records if current_name(r["method"]) and not removed_options(r["config"])]
    out = [f"## {title}", "", f"`{path.relative_to(REPO)}`", "", tables(kept, current, args), ""]
    paired = paired_table(kept, pairs, args)
    if paired:
        out.extend(["Paired by draw:", "", paired, ""])
    against_paper = paper_table(kept, args) if args.dataset == "MNIST" else ""
    if against_paper:
        out.extend(["The paper preset against the VAT paper (its final step, as the paper reports):", "",
                    against_paper, ""])
    if removed:
        out.extend(["Rows of options since removed, as recorded (`git checkout 75ffb15` reruns them):", "",
                    accuracy_table(removed, list(dict.fromkeys(r["method"] for r in removed)), None), ""])
    # Records of a method made before its config changed (e.g. a preset that was fixed): kept, as recorded.
    earlier = [dict(r, method=f"{r['method']} (earlier: {changed(r, args)})") for r in kept
               if not same_config(r["config"], method_config(r["method"], r["draw"], args))]
    if earlier:
        out.extend(["Earlier configs of these methods, as recorded (each record holds its full config):", "",
                    accuracy_table(earlier, list(dict.fromkeys(r["method"] for r in earlier)), None), ""])
    return out


def results_md() -> str:
    """benchmarks/RESULTS.md: every table, generated from the results files (never edited by hand)."""
    steps = load(RESULTS / "step.json")
    out = ["# Results", "",
           "Generated by `python benchmarks/benchmark.py results` from `benchmarks/results/*.json`; do not edit. "
           "Test accuracy is reported only: every checkpoint was chosen on validation (1,000 held-out labelled "
           "images). The experiment log, with what each row answered, is `docs/EXPERIMENTS.md`.", "",
           "## Presets: MNIST", "",
           "`python -m vatlib train --preset NAME`: the benchmark's runs of each preset's config "
           "(`benchmarks/results/accuracy.json`; draw k uses data_seed=k and seed=k).", "",
           presets_table(load(RESULTS / "accuracy.json"), steps), ""]
    out += accuracy_section("Accuracy over labelled draws: MNIST", RESULTS / "accuracy.json", RESULTS_ARGS, PAIRS)
    out += accuracy_section("Accuracy over labelled draws: Fashion-MNIST", RESULTS / "fashion-mnist.json",
                            FASHION_ARGS, FASHION_PAIRS)
    for path in sorted(RESULTS.glob("tune-*.json")):
        out.extend([f"## Tune: {path.stem[5:]}", "", f"`{path.relative_to(REPO)}` (validation only)", "",
                    vatlib.tune_table(tune_records(load(path))), ""])
    if steps:
        out.extend(["## One training step", "", step_table(steps[-1]), ""])
    for record in load(RESULTS / "loop.json"):
        out.extend([f"## Training loop against {record['baseline']}", "", loop_table(record), ""])
    out.extend(["## Screens (validation only)", "", screen_table(load(RESULTS / "screen.json")), ""])
    return "\n".join(out)


def write_results(check: bool = False, path: Optional[Path] = None) -> None:
    """``benchmark.py results``: write RESULTS.md, or (``check``) fail unless it is what the files generate."""
    text, path = results_md(), path or RESULTS_MD
    if check:
        if not path.exists() or path.read_text() != text:
            raise SystemExit(f"{path} is not what `python benchmarks/benchmark.py results` writes; rerun it")
        print(f"{path} is up to date")
    else:
        path.write_text(text)
        print(f"wrote {path}")
