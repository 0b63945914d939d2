"""Benchmarks: accuracy over labelled draws (and time to accuracy), one training step, and the training loop.

    python benchmarks/benchmark.py accuracy [--methods supervised,vat,default,best] [--draws 5]
    python benchmarks/benchmark.py step [--repeats 30]
    python benchmarks/benchmark.py loop --baseline REV [--steps 3000] [--repeats 1]
    python benchmarks/benchmark.py results [--check]     # benchmarks/RESULTS.md from benchmarks/results/*.json

`accuracy` trains every method on every labelled draw (draw k uses data_seed=k and seed=k, so both
the 100 labelled images and the training randomness change) and prints two markdown tables: the
test accuracy of the checkpoint chosen on validation and of the final step, with wall time and
speed; and the time to accuracy, the training time until the test accuracy (evaluated every
`eval_every` steps) first reaches 98 %, 98.5 % and 99 % (reporting only: nothing is chosen by it).
Raw results, histories included, go to a JSON file after every run; an interrupted benchmark
resumes where it stopped (runs already in the file with the same config are skipped, and only
records whose config is the method's current one are tabulated).

`step` times one training step as `vatlib.Run.train_step` takes it (32 labelled + 128 unlabelled
images unless said, fresh augmented batches, 0.3's model unless said): supervised-only, VAT, VAT + entropy
minimisation on the clean or on the perturbed pass, 0.3's default recipe, the same with the first block
pooled first, the fast preset (that, with 64 unlabelled images), the default recipe (0.3's with a second
conv block at 7x7), and the textbook VAT step
that the most-copied public PyTorch VAT loss makes (clean prediction under no_grad, a power
iteration that calls .backward() through the whole model and then zeroes the weight gradients),
interleaved, and prints medians and ratios.

`loop` runs `python -m vatlib train` of the code at git revision REV and of this working tree,
alternately, and prints their steps per second and whether their histories agree number for number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

import vatlib
from vatlib.config import RECIPE_0_3
from vatlib.records import append as _append
from vatlib.records import key as _key
from vatlib.records import load as _load
from vatlib.records import differences, machine_info, same_config, screen_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# Each method is a preset plus overrides; "default" is `python -m vatlib train`, "best" is `--preset best`.
# The rows of the ablation add one ingredient each: supervised, vat, vat+ent, vat+pseudo, default-0.3, default.
# Every row up to default-0.3 keeps 0.3's model and length (RECIPE_0_3: one conv block at 7x7, 3,000 steps).
METHODS: Dict[str, tuple] = {
    "supervised": ("supervised", RECIPE_0_3),  # same labels, model, shifts, optimiser and steps
    "vat": ("vat", {}),  # VAT on its own (with entropy minimisation): the vat preset, the default's model and length
    "vat+ent": ("vat", dict(RECIPE_0_3, eps=1.0)),  # 0.2's default: the same on 0.3's model and length, eps 1
    "vat+pseudo": ("default", dict(stroke_p=0.0, **RECIPE_0_3)),  # VAT + FlexMatch pseudo-labels, instead of the entropy
    "default-0.3": ("default", RECIPE_0_3),  # + a random stroke on the labelled images: 0.3's default
    "default": ("default", {}),  # + a second conv block at 7x7 and 3,500 steps
    "default-no-vat": ("default", dict(vat_weight=0.0)),  # the default without VAT: what VAT adds, paired by draw
    # The same at the default's wall time: a step without VAT costs 0.49x the default's (step table, 2026-12-03).
    "default-no-vat-equal-time": ("default", dict(vat_weight=0.0, steps=7000)),
    # Not semi-supervised: the default's model and steps trained on every training label (59,000), 128 per batch.
    # The ceiling the 100-label runs are measured against.
    "all-labels": ("supervised", dict(all_labels=True, batch_labelled=128)),
    # The VAT paper's MNIST setup (its MLP, eps 5, 100 + 250 images, Adam 0.002 x0.9 every 500 updates, 50,000
    # updates): its reported figure is the final step's test error, 1.36 %. A draw may span several invocations.
    "paper": ("paper", {}),
    "default-compiled": ("default", dict(compile=True)),  # the same with torch.compile (its compile time counts)
    "fast": ("fast", {}),  # 0.3's default on a cheaper step: 64 unlabelled images per step, the first block pooled first
    "best": ("best", {}),  # the recipe best_model.pth is trained with: 0.3's default, three times longer
    # The best preset up to 0.3 (VAT + entropy minimisation, 9,000 steps, rotations and zooms): 0.2's best_model.pth.
    "vat+ent-best": ("vat", dict(RECIPE_0_3, eps=1.0, steps=9000, eval_every=500, max_rotate=10.0, max_scale=0.1)),
}
THRESHOLDS = (0.98, 0.985, 0.99)  # test accuracies of the time-to-accuracy table (MNIST's; --thresholds for others)


def _timed(rows: List[Dict]) -> Tuple[List[Dict], List[Dict]]:
    """The runs whose times count, and those left out: a record with a "note" shared the cores, so it is
    left out, unless every run shared them (then their times are all there is)."""
    alone = [r for r in rows if "note" not in r]
    return (alone, [r for r in rows if "note" in r]) if alone else (rows, [])


def parse_draws(text: str) -> List[int]:
    """--draws, as everywhere in the project (vatlib.parse_draws): "10" -> 0-9, "8-9" -> 8 and 9, "2,5" -> 2 and 5."""
    try:
        return vatlib.parse_draws(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_set(text: str) -> Dict[str, object]:
    """--set 'eps=4,entmin_weight=0.5' -> {"eps": 4.0, "entmin_weight": 0.5}, typed like the TrainConfig fields."""
    defaults = vatlib.TrainConfig()
    out: Dict[str, object] = {}
    for item in filter(None, text.split(",")):
        field, _, value = item.partition("=")
        if not hasattr(defaults, field):
            raise SystemExit(f"--set {item!r}: {field!r} is not a TrainConfig field")
        kind = type(getattr(defaults, field))
        if kind is bool:
            if value not in ("True", "False"):
                raise SystemExit(f"--set {item!r}: {field} takes True or False")
            out[field] = value == "True"
        else:
            out[field] = kind(value)
    return out


def method_name(method: str, args: argparse.Namespace) -> str:
    """The method as recorded: its name, plus the --set overrides, e.g. "default (eps=4.0)"."""
    extra = parse_set(getattr(args, "set", "") or "")
    return method + (f" ({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")


def method_config(name: str, draw: int, args: argparse.Namespace) -> vatlib.TrainConfig:
    """The config of a method by its recorded name ("default", or "default (eps=4.0)" with overrides) on a draw."""
    method, _, extra = name.partition(" (")
    if method not in METHODS:
        raise SystemExit(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    preset, overrides = METHODS[method]
    overrides = {**overrides, **parse_set(extra.rstrip(")").replace(", ", ","))}
    cfg = vatlib.preset_config(preset, **overrides, dataset=args.dataset, data_root=args.data_root, device=args.device,
                               progress=False, out=str(Path(args.runs) / f"{args.dataset}-{name.replace(' ', '')}-draw{draw}"))
    return vatlib.draw_config(cfg, draw)


def recorded(records: List[Dict], name: str, cfg: vatlib.TrainConfig) -> bool:
    """Whether ``records`` hold a run of method ``name`` with config ``cfg`` (the benchmark then skips it)."""
    return any(r["method"] == name and same_config(r["config"], cfg) for r in records)


def _draw_list(draws: List[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    parts: List[str] = []
    for d in draws:
        if parts and d == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{d}"
        else:
            parts.append(str(d))
    return ", ".join(parts)


def plan(records: List[Dict], names: List[str], args: argparse.Namespace) -> str:
    """One line per method: the draws asked for, those already recorded (skipped) and those to train.
    It shows at once a count read as a draw number (``--draws 3`` is draws 0-2, not draw 3)."""
    lines = []
    for name in names:
        todo = [d for d in args.draws if not recorded(records, name, method_config(name, d, args))]
        done = [d for d in args.draws if d not in todo]
        lines.append(f"{name}: draws {_draw_list(args.draws)}; already in {args.results}: "
                     f"{_draw_list(done) or 'none'}; to train: {_draw_list(todo) or 'none'}")
    return "\n".join(lines)


def _train_or_resume(cfg: vatlib.TrainConfig, data: vatlib.ImageData) -> Tuple[vatlib.TrainResult, Optional[int]]:
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
    results = Path(args.results)
    data = vatlib.load_dataset(args.dataset, args.data_root)
    names = [method_name(m, args) for m in args.methods.split(",")]
    print(plan(_load(results), names, args), flush=True)
    for name in names:
        for draw in args.draws:
            cfg = method_config(name, draw, args)
            if recorded(_load(results), name, cfg):
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name} draw {draw} ...", flush=True)
            t0 = time.perf_counter()
            res, resumed_from = _train_or_resume(cfg, data)
            wall = time.perf_counter() - t0
            train_time = res.history[-1]["time_s"]
            record = {"method": name, "draw": draw, "config": _key(cfg), "best": res.best, "final": res.final,
                      "wall_s": round(wall, 1), "train_s": train_time, "steps": cfg.steps,
                      "steps_per_s": round(cfg.steps / train_time, 2), "history": res.history,
                      "machine": machine_info()}
            if args.note:
                record["note"] = args.note
            if resumed_from is not None:  # wall_s is this part's; train_s (the history's clock) is the whole run's
                record["resumed_from_step"] = resumed_from
            _append(results, record)
            print(f"    test {res.best['test_acc']:.2%} (best val, step {res.best['step']}), "
                  f"final {res.final['test_acc']:.2%}, {wall:.0f} s", flush=True)
    print(tables(_load(results), names, args))


def _mean_std(xs: List[float]) -> str:
    if len(xs) == 1:
        return f"{100 * xs[0]:.2f}"
    return f"{100 * statistics.mean(xs):.2f} ± {100 * statistics.stdev(xs):.2f}"


def current_records(records: List[Dict], method: str, args: Optional[argparse.Namespace]) -> List[Dict]:
    """The records of ``method`` (a recorded name, e.g. "default (eps=4.0)") made with the config the method has
    now (every record of that name when ``args`` is None), by draw."""
    rows = [r for r in records if r["method"] == method]
    if args is not None:
        rows = [r for r in rows if same_config(r["config"], method_config(method, r["draw"], args))]
    return sorted(rows, key=lambda r: r["draw"])


def _draws(rows: List[Dict]) -> str:
    """ "draws 0-4" for consecutive draws, "draws 0, 2, 5" otherwise."""
    ds = [r["draw"] for r in rows]
    if len(ds) > 2 and ds == list(range(ds[0], ds[-1] + 1)):
        return f"draws {ds[0]}–{ds[-1]}"
    return ("draw " if len(ds) == 1 else "draws ") + ", ".join(map(str, ds))


def _where(m: Dict[str, str]) -> str:
    """A record's machine as the tables name it: "cpu (isa), cores; versions" (records before isa: "cpu, ...")."""
    isa = f" ({m['isa']})" if m.get("isa") else ""
    return f"{m['cpu']}{isa}, {m['cores']} cores; torch {m['torch']}, torchvision {m['torchvision']}"


def _by_machine(rows: List[Dict]) -> Dict[str, List[Dict]]:
    """A method's rows grouped by where they ran (``_where``), in draw order."""
    groups: Dict[str, List[Dict]] = {}
    for r in rows:
        groups.setdefault(_where(r["machine"]), []).append(r)
    return groups


def accuracy_table(records: List[Dict], methods: List[str], args: Optional[argparse.Namespace] = None) -> str:
    lines = ["| method | draws | test acc. per draw, % (checkpoint chosen on validation) | mean ± std, % | worst, % | "
             "final-step mean ± std, % | train time per run, s | steps | steps/s | threads |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    machines: Dict[str, List[str]] = {}  # "cpu, cores; versions" -> the methods (and their draws) measured there
    split = False  # whether a row's draws ran on more than one machine
    untimed: List[str] = []  # the runs left out of the times: they shared the cores (their records say with what)
    all_shared: List[str] = []  # the methods (draws) timed on runs that all shared the cores: the times are theirs
    for method in methods:
        rows = current_records(records, method, args)
        if not rows:
            continue
        best = [r["best"]["test_acc"] for r in rows]
        final = [r["final"]["test_acc"] for r in rows]
        groups = _by_machine(rows)
        # Times compare only within one machine: a method measured on two gets one figure per machine. They
        # come from the runs that had the cores to themselves: a record with a "note" shared them.
        timed: Dict[str, List[Dict]] = {}
        shared: List[Dict] = []
        for where, g in groups.items():
            timed[where], left_out = _timed(g)
            shared += left_out

        def per_machine(field: str, fmt: str) -> str:
            return " / ".join(format(statistics.mean(r[field] for r in g), fmt) for g in timed.values())
        if shared:
            untimed.append(f"{method} ({_draws(shared)})")
        # _timed keeps a run with a note only where every run on that machine has one.
        shared_timed = [r for g in timed.values() for r in g if "note" in r]
        if shared_timed:
            all_shared.append(method if len(shared_timed) == len(rows) else f"{method} ({_draws(shared_timed)})")
        lines.append(
            f"| {method} | {len(rows)} | {' '.join(f'{100 * a:.2f}' for a in best)} | {_mean_std(best)} | "
            f"{100 * min(best):.2f} | {_mean_std(final)} | {per_machine('train_s', '.0f')} | "
            f"{rows[0]['steps']} | {per_machine('steps_per_s', '.1f')} | "
            f"{'/'.join(sorted({r['machine']['threads'] for g in timed.values() for r in g}))} |")
        split |= len(groups) > 1
        for where, g in groups.items():
            machines.setdefault(where, []).append(method if len(groups) == 1 else f"{method} ({_draws(g)})")
    if not machines:  # an empty table still names where it would have run
        machines[_where(machine_info())] = []
    if len(machines) == 1:
        lines.append(f"\n{next(iter(machines))}; draw k uses data_seed=k and seed=k.")
    else:  # name the machine of each row: times compare only within one machine
        lines.append("\n" + "; ".join(f"{', '.join(ms)}: {where}" for where, ms in machines.items())
                     + ". Draw k uses data_seed=k and seed=k."
                     + (" A row measured on two machines gives its times on each, in the order of its draws."
                        if split else ""))
    if untimed:
        lines[-1] += (" Train time, steps/s and threads: the runs that had the cores to themselves; left out, as they "
                      f"shared the cores (their records say with what): {', '.join(untimed)}.")
    if all_shared:
        lines[-1] += f" {_shared_times(all_shared)}"
    return "\n".join(lines)


def _shared_times(methods: List[str]) -> str:
    return (f"Every run of {', '.join(methods)} shared the cores (their records say with what), so "
            f"{'its' if len(methods) == 1 else 'their'} times are those runs': not comparable with the other rows.")


def time_to_accuracy(history: List[Dict], threshold: float) -> Optional[float]:
    """Training time (s) at the first evaluation whose test accuracy reaches ``threshold``; None if none does."""
    return next((row["time_s"] for row in history if row["test_acc"] >= threshold), None)


def time_to_accuracy_table(records: List[Dict], methods: List[str], args: Optional[argparse.Namespace] = None) -> str:
    thresholds = getattr(args, "thresholds", None) or THRESHOLDS
    head = " | ".join(f"to {100 * t:g} %: median s (draws reaching it)" for t in thresholds)
    lines = [f"| method | timed draws | {head} |", "|---|---|" + "---|" * len(thresholds)]
    all_shared: List[str] = []
    for method in methods:
        rows = [r for r in current_records(records, method, args) if "history" in r]
        rows, _ = _timed(rows)
        if not rows:
            continue
        if any("note" in r for r in rows):  # _timed kept the runs with a note: then every run has one
            all_shared.append(method)
        cells = []
        for t in thresholds:
            times = [s for s in (time_to_accuracy(r["history"], t) for r in rows) if s is not None]
            cells.append(f"{statistics.median(times):.0f} ({len(times)}/{len(rows)})" if times else f"– (0/{len(rows)})")
        lines.append(f"| {method} | {len(rows)} | {' | '.join(cells)} |")
    if all_shared:
        lines.append(f"\n{_shared_times(all_shared)}")
    return "\n".join(lines)


def tables(records: List[Dict], methods: List[str], args: Optional[argparse.Namespace] = None) -> str:
    return accuracy_table(records, methods, args) + "\n\n" + time_to_accuracy_table(records, methods, args)


# ----------------------------------------------------------------------------- one training step

def naive_vat_loss(model: torch.nn.Module, x: torch.Tensor, eps: float, xi: float) -> torch.Tensor:
    """The textbook VAT loss many public implementations use: the clean prediction under no_grad, and a
    power iteration that calls .backward() on the whole model (computing every weight gradient, then
    throwing them away). Reference for timing only; it also lets BN statistics drift."""
    def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:  # KL(p || q), summed over the batch
        return F.kl_div(F.log_softmax(q_logits, 1), F.log_softmax(p_logits, 1), log_target=True, reduction="sum")

    def unit(d: torch.Tensor) -> torch.Tensor:  # per-sample unit L2 norm
        return d / d.flatten(1).norm(dim=1).view(-1, *[1] * (d.dim() - 1))

    with torch.no_grad():
        p_logits = model(x)
    d = unit(torch.randn_like(x)).requires_grad_(True)
    kl(p_logits, model(x + xi * d)).backward()
    r_adv = eps * unit(d.grad.detach())
    model.zero_grad(set_to_none=True)
    return kl(p_logits, model(x + r_adv)) / len(x)


def run_step(args: argparse.Namespace) -> None:
    data = vatlib.load_dataset(args.dataset, args.data_root)
    device = vatlib.resolve_device(args.device)

    def new_run(preset: str, **overrides) -> vatlib.Run:
        cfg = vatlib.preset_config(preset, out="", progress=False, device=str(device), **overrides)
        split = vatlib.split_train(data.train_labels, cfg.per_class, cfg.n_validation, cfg.data_seed)
        run = vatlib.Run(cfg, data, split, device)
        run.model.train()
        return run

    def naive_step(run: vatlib.Run) -> None:  # the same batches and update, with the textbook VAT loss
        xl, yl = run.batch(run.labelled, run.cfg.batch_labelled)
        xu, _ = run.batch(run.unlabelled, run.cfg.batch_unlabelled)
        loss = F.cross_entropy(run.model(xl), yl) + naive_vat_loss(run.model, xu, run.cfg.eps, run.cfg.xi)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()

    runs = {"supervised": new_run("supervised", **RECIPE_0_3), "VAT (vatlib)": new_run("vat", entmin_weight=0.0, **RECIPE_0_3),
            "VAT + entropy min. (0.2's default)": new_run("vat", **RECIPE_0_3),
            "0.3's default recipe (VAT + pseudo-labels + stroke)": new_run("default", **RECIPE_0_3),
            "... with the first block pooled first (pool_first)": new_run("default", pool_first=True, **RECIPE_0_3),
            "the fast preset (that, and 64 unlabelled images)": new_run("fast"),
            "the default recipe (0.3's, with a second block at 7x7)": new_run("default"),
            "the default recipe without VAT (vat_weight=0)": new_run("default", vat_weight=0.0),
            "the vat preset (VAT + entropy min., the default's model)": new_run("vat"),
            "VAT (textbook reference)": new_run("vat", entmin_weight=0.0, **RECIPE_0_3)}
    steps: Dict[str, Callable[[], None]] = {name: run.train_step for name, run in runs.items()}
    steps["VAT (textbook reference)"] = lambda: naive_step(runs["VAT (textbook reference)"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for rep in range(args.warmup + args.repeats):
        for name, step in steps.items():  # interleaved, so drift hits every variant alike
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            if rep >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    cfg = runs["supervised"].cfg
    record = {"median_ms": {k: round(1000 * statistics.median(v), 2) for k, v in times.items()},
              "repeats": args.repeats, "device": str(device), "width": cfg.width, "machine": machine_info(),
              "date": time.strftime("%Y-%m-%d %H:%M")}
    _append(Path(args.results), record)
    print(step_table(record))


def step_table(record: Dict) -> str:
    med, m = record["median_ms"], record["machine"]
    where = m["cuda"] if record["device"].startswith("cuda") else f"{m['cpu']} ({m.get('isa', '?')})"
    lines = [f"One training step (32 labelled + 128 unlabelled images unless said), median of {record['repeats']}, "
             f"{where}, {m['threads']} threads, torch {m['torch']}, {record['date']}\n",
             "| step | ms | × supervised | × textbook VAT |", "|---|---|---|---|"]
    for name, ms in med.items():
        lines.append(f"| {name} | {ms:.1f} | {ms / med['supervised']:.2f} | {ms / med['VAT (textbook reference)']:.2f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the training loop, before vs after

def run_loop(args: argparse.Namespace) -> None:
    """`python -m vatlib train` at revision ``args.baseline`` and in this working tree, alternately."""
    results = Path(args.results)
    records = _load(results)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(base), args.baseline],
                       check=True)
        try:
            trees = {f"before ({args.baseline})": base, "after (this tree)": REPO}
            histories: Dict[str, List] = {name: [] for name in trees}
            for rep in range(args.repeats):
                for name, root in trees.items():
                    out = Path(tmp) / f"run-{rep}-{len(histories[name])}-{name.split()[0]}"
                    cmd = [sys.executable, "-m", "vatlib", "train", "--steps", str(args.steps), "--out", str(out),
                           "--no-progress", "--data-root", str(REPO / "data"), "--device", args.device]
                    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[1:])}", flush=True)
                    # cwd=root puts that tree's vatlib first on sys.path (before the editable install).
                    subprocess.run(cmd, cwd=root, check=True, stdout=subprocess.DEVNULL,
                                   env=dict(os.environ, PYTHONPATH=str(root)))
                    histories[name].append(json.loads((out / "history.json").read_text()))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    strip = lambda h: [{k: v for k, v in row.items() if k != "time_s"} for row in h]  # noqa: E731
    (before, b_hist), (after, a_hist) = histories.items()
    same = all(strip(x) == strip(y) for x, y in zip(b_hist, a_hist))
    speed = {name: [args.steps / h[-1]["time_s"] for h in hs] for name, hs in histories.items()}
    record = {"baseline": args.baseline, "steps": args.steps, "steps_per_s": speed, "same_history": same,
              "machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M")}
    records.append(record)
    vatlib.write_json(results, records)
    print(loop_table(record))


def loop_table(record: Dict) -> str:
    speed = record["steps_per_s"]
    base = statistics.median(next(iter(speed.values())))
    lines = [f"`python -m vatlib train --steps {record['steps']}` (evaluations included), "
             f"{record['machine']['cpu']}, {record['machine']['threads']} threads\n",
             "| code | runs | steps/s (each run) | × before |", "|---|---|---|---|"]
    for name, values in speed.items():
        lines.append(f"| {name} | {len(values)} | {' '.join(f'{v:.2f}' for v in values)} | "
                     f"{statistics.median(values) / base:.2f} |")
    lines.append(f"\nsame history number for number (all but wall time): {'yes' if record['same_history'] else 'no'}")
    return "\n".join(lines)


# (with, without) an ingredient, compared draw by draw in RESULTS.md.
PAIRS = [("default", "default-no-vat"), ("default", "default-no-vat-equal-time")]
# Fashion-MNIST: the default recipe against 0.2's tuned VAT + entropy and against the labels alone, by draw.
FASHION_PAIRS = [("default", "vat+ent (eps=2.0)"), ("default", "supervised")]


def paired_table(records: List[Dict], pairs: List[Tuple[str, str]], args: Optional[argparse.Namespace]) -> str:
    """Test accuracy of A minus B on the draws both have run (checkpoints chosen on validation), with the standard
    error of the mean difference: a difference beyond about twice it is not the draw-to-draw noise."""
    lines = ["| A | B | draws | A − B per draw, points | mean ± s.e., points | A ahead on |", "|---|---|---|---|---|---|"]
    for a, b in pairs:
        ra = {r["draw"]: r for r in current_records(records, a, args)}
        rb = {r["draw"]: r for r in current_records(records, b, args)}
        draws = sorted(set(ra) & set(rb))
        if len(draws) < 2:
            continue
        diff = [100 * (ra[d]["best"]["test_acc"] - rb[d]["best"]["test_acc"]) for d in draws]
        se = statistics.stdev(diff) / len(diff) ** 0.5
        lines.append(f"| {a} | {b} | {_draw_list(draws)} | {' '.join(f'{x:+.2f}' for x in diff)} | "
                     f"{statistics.mean(diff):+.2f} ± {se:.2f} | {sum(x > 0 for x in diff)}/{len(diff)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


# The VAT paper's MNIST-100 test errors, %, for its final model (Miyato et al.): what the paper preset is set against.
PAPER_ERRORS = {"TPAMI 2018 (arXiv 1704.03976)": 1.36, "ICLR 2016 (arXiv 1507.00677)": 2.12}


def paper_table(records: List[Dict], args: Optional[argparse.Namespace]) -> str:
    """The paper preset's final-step test error per draw (the paper reports its final model) beside the paper's."""
    rows = current_records(records, "paper", args)  # a record is written when its run has ended, all steps done
    if not rows:
        return ""
    errors = [100 * (1 - r["final"]["test_acc"]) for r in rows]
    spread = f" ± {statistics.stdev(errors):.2f}" if len(errors) > 1 else ""
    papers = "; ".join(f"{name}: {err:.2f} %" for name, err in PAPER_ERRORS.items())
    per_draw = " ".join(f"{e:.2f}" for e in errors)
    return ("| method | draws | final-step test error per draw, % | mean, % | the paper's, % |\n|---|---|---|---|---|\n"
            f"| paper | {_draw_list([r['draw'] for r in rows])} | {per_draw} | {statistics.mean(errors):.2f}{spread} | "
            f"{min(PAPER_ERRORS.values()):.2f} |\n\nThe VAT paper's MNIST-100 errors: {papers}.")


# The options the results tables read the MNIST records with (a method's config, as run by this benchmark's defaults).
RESULTS_ARGS = argparse.Namespace(dataset="MNIST", data_root="data", device="auto", runs="runs/bench", thresholds=None)
ABLATION = ("supervised", "vat", "default-no-vat", "default", "best", "all-labels")


def ablation_md(methods: Sequence[str] = ABLATION) -> str:
    """The MNIST ablation over labelled draws and the paired comparison, as RESULTS.md gives them (the notebook
    shows it)."""
    records = _load(RESULTS / "accuracy.json")
    return (accuracy_table(records, list(methods), RESULTS_ARGS) + "\n\nPaired by draw:\n\n"
            + paired_table(records, PAIRS, RESULTS_ARGS))


def _changed(record: Dict, args: argparse.Namespace) -> str:
    """What a record's config set differently from its method's config today, e.g. "eps=1.0, entmin_weight=0.0":
    the fields ``same_config`` found different."""
    changed = differences(record["config"], method_config(record["method"], record["draw"], args))
    return ", ".join(f"{k}={v}" for k, v in changed.items())


def results_md() -> str:
    """benchmarks/RESULTS.md: every table, generated from the results files (never edited by hand)."""
    ns = RESULTS_ARGS
    out = ["# Results", "",
           "Generated by `python benchmarks/benchmark.py results` from `benchmarks/results/*.json`; do not edit. "
           "Test accuracy is reported only: every checkpoint was chosen on validation (1,000 held-out labelled "
           "images). The experiment log, with what each row answered, is `docs/EXPERIMENTS.md`.", ""]

    def accuracy_section(title: str, path: Path, args: argparse.Namespace, pairs: List[Tuple[str, str]]) -> None:
        records = _load(path)
        names = list(dict.fromkeys(r["method"] for r in records))
        current = sorted((n for n in names if _current_name(n)), key=lambda n: list(METHODS).index(n.partition(" (")[0]))
        removed = [n for n in names if n not in current]
        out.extend([f"## {title}", "", f"`{path.relative_to(REPO)}`", "", tables(records, current, args), ""])
        paired = paired_table(records, pairs, args)
        if paired:
            out.extend(["Paired by draw:", "", paired, ""])
        against_paper = paper_table(records, args) if args.dataset == "MNIST" else ""
        if against_paper:
            out.extend(["The paper preset against the VAT paper (its final step, as the paper reports):", "",
                        against_paper, ""])
        if removed:
            out.extend(["Rows of options removed in 1.0, as recorded (`git checkout 75ffb15` reruns them):", "",
                        accuracy_table(records, removed, None), ""])
        # Records of a method made before its config changed (e.g. a preset that was fixed): kept, as recorded.
        earlier = [dict(r, method=f"{r['method']} (earlier: {_changed(r, args)})") for r in records
                   if r["method"] in current and not same_config(r["config"], method_config(r["method"], r["draw"], args))]
        if earlier:
            names = list(dict.fromkeys(r["method"] for r in earlier))
            out.extend(["Earlier configs of these methods, as recorded (each record holds its full config):", "",
                        accuracy_table(earlier, names, None), ""])

    accuracy_section("Accuracy over labelled draws: MNIST", RESULTS / "accuracy.json", ns, PAIRS)
    fashion = argparse.Namespace(**{**vars(ns), "dataset": "FashionMNIST", "thresholds": [0.72, 0.75, 0.77]})
    accuracy_section("Accuracy over labelled draws: Fashion-MNIST", RESULTS / "fashion-mnist.json", fashion, FASHION_PAIRS)
    for path in sorted(RESULTS.glob("tune-*.json")):
        runs = _load(path)
        out.extend([f"## Tune: {path.stem[5:]}", "", f"`{path.relative_to(REPO)}` (validation only)", "",
                    vatlib.tune_table(tune_records(runs)), ""])
    if (RESULTS / "step.json").exists():
        out.extend(["## One training step", "", step_table(_load(RESULTS / "step.json")[-1]), ""])
    for record in _load(RESULTS / "loop.json"):
        out.extend([f"## Training loop against {record['baseline']}", "", loop_table(record), ""])
    out.extend(["## Screens (validation only)", "", screen_table(_load(RESULTS / "screen.json")), ""])
    return "\n".join(out)


def tune_records(runs: List[Dict]) -> List[Dict]:
    """``vatlib.tune``'s records (mean validation accuracy per combination, best first) from its raw runs."""
    combos: Dict[str, List[Dict]] = {}
    for r in sorted(runs, key=lambda r: r["draw"]):
        combos.setdefault(json.dumps(r["params"], sort_keys=True), []).append(r)
    records = [{"params": rs[0]["params"], "val_acc": statistics.mean(r["val_acc"] for r in rs),
                "val_accs": [r["val_acc"] for r in rs], "final_val_accs": [r["final_val_acc"] for r in rs]}
               for rs in combos.values()]
    return sorted(records, key=lambda r: -r["val_acc"])


def _current_name(name: str) -> bool:
    """Whether a recorded method name is one this version can still train (its method and --set fields exist)."""
    method, _, extra = name.partition(" (")
    fields = {f.name for f in dataclasses.fields(vatlib.TrainConfig)}
    given = [item.partition("=")[0] for item in extra.rstrip(")").split(", ") if item]
    return method in METHODS and all(f in fields for f in given)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    acc = sub.add_parser("accuracy", help="methods x labelled draws -> tables + JSON")
    acc.add_argument("--methods", default="supervised,vat,default,best", help=f"comma-separated, from {list(METHODS)}")
    acc.add_argument("--draws", type=parse_draws, default=parse_draws("5"),
                     help="a count N (draws 0..N-1, the default 5), a range A-B or a list A,B")
    acc.add_argument("--note", default="", help="a remark stored with each new record, e.g. that two runs shared the cores")
    acc.add_argument("--results", default="benchmarks/results/accuracy.json", help="raw results (JSON), read and extended")
    acc.add_argument("--runs", default="runs/bench", help="scratch folder for each run's checkpoints (replaced, unless it holds this very "
                     "run interrupted: that is resumed)")
    acc.add_argument("--table-only", action="store_true", help="print the tables of the results file, train nothing")
    acc.add_argument("--thresholds", type=lambda t: [float(v) for v in t.split(",")], default=None,
                     help="test accuracies of the time-to-accuracy table (default: 0.98,0.985,0.99)")
    acc.add_argument("--set", default="", help="TrainConfig overrides for every method, e.g. eps=4 (recorded in "
                                                "the method's name: 'default (eps=4.0)')")
    step = sub.add_parser("step", help="time one training step: supervised vs VAT vs textbook VAT")
    step.add_argument("--repeats", type=int, default=30)
    step.add_argument("--warmup", type=int, default=5)
    step.add_argument("--results", default="benchmarks/results/step.json")
    loop = sub.add_parser("loop", help="steps/s of `python -m vatlib train` at a git revision vs this tree")
    loop.add_argument("--baseline", required=True, help="git revision to compare with, e.g. ec50cf1")
    loop.add_argument("--steps", type=int, default=3000)
    loop.add_argument("--repeats", type=int, default=1, help="runs of each, alternating")
    loop.add_argument("--results", default="benchmarks/results/loop.json")
    res = sub.add_parser("results", help="write benchmarks/RESULTS.md from the results files")
    res.add_argument("--check", action="store_true", help="only check that benchmarks/RESULTS.md is up to date")
    for p in (acc, step, loop):
        p.add_argument("--dataset", default="MNIST")
        p.add_argument("--data-root", default="data")
        p.add_argument("--device", default="auto" if p is not loop else "cpu")
        p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = one per core)")
    args = parser.parse_args(argv)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    if args.what == "results":
        text, path = results_md(), REPO / "benchmarks" / "RESULTS.md"
        if args.check:
            if not path.exists() or path.read_text() != text:
                raise SystemExit(f"{path} is not what `python benchmarks/benchmark.py results` writes; rerun it")
            print(f"{path} is up to date")
        else:
            path.write_text(text)
            print(f"wrote {path}")
    elif args.what == "accuracy" and args.table_only:  # --methods may name variants: "supervised;default (eps=4.0)"
        names = [method_name(m, args) for m in args.methods.split(";" if ";" in args.methods else ",")]
        unknown = [n for n in names if n.partition(" (")[0] not in METHODS]
        if unknown:  # the same message as a training run's, not a silently empty table
            raise SystemExit(f"unknown method {unknown[0].partition(' (')[0]!r}; allowed: {', '.join(METHODS)}")
        print(tables(_load(Path(args.results)), names, args))
    elif args.what == "accuracy":
        run_accuracy(args)
    elif args.what == "step":
        run_step(args)
    else:
        run_loop(args)


if __name__ == "__main__":
    main()
