"""Speed: one training step of every preset, and the whole training loop of this tree against a git revision.

``run_step`` times one step as ``vatlib.Run.train_step`` takes it (fresh augmented batches of the recipe's own
sizes) for every preset in ``vatlib.PRESETS``, the default without VAT, VAT alone on the default's model, and the
textbook VAT step on that model that the most-copied public PyTorch VAT loss makes (``naive_vat_loss``),
interleaved so that drift hits every variant alike, and records medians: a preset's minutes per run (its steps x
its step) then come from one run on one machine.

``run_loop`` runs ``python -m vatlib train --preset P`` of the code at a git revision (a worktree) and of this
tree, alternately, and records whether their histories agree number for number, and their steps per second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F

import vatlib
from benchmarks.methods import import_experiment
from vatlib.records import append, machine_info

REPO = Path(__file__).resolve().parents[1]
NO_VAT = "default without VAT (vat_weight=0)"
VAT_ALONE = "VAT alone, the default's model (vatlib)"
TEXTBOOK = "VAT alone, the default's model (textbook reference)"


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


def step_runs(data: vatlib.ImageData, device: torch.device, dataset: str = "MNIST",
              models: Sequence[str] = ()) -> Dict[str, vatlib.Run]:
    """The runs whose steps ``run_step`` times, by name: every preset, then the default without VAT, VAT alone on
    the default's model, and that once more for the textbook step, then the default recipe with each of ``models``
    (names an experiment registered with ``vatlib.register_model``); each on draw 0's split."""
    def new_run(preset: str, **overrides) -> vatlib.Run:
        cfg = vatlib.preset_config(preset, out="", progress=False, device=str(device), dataset=dataset, **overrides)
        split = vatlib.split_train(data.train_labels, cfg.per_class, cfg.n_validation, cfg.data_seed)
        run = vatlib.Run(cfg, data, split, device)
        run.model.train()
        return run

    runs = {name: new_run(name) for name in vatlib.PRESETS}
    runs[NO_VAT] = new_run("default", vat_weight=0.0)
    for name in (VAT_ALONE, TEXTBOOK):
        runs[name] = new_run("default", pseudo_weight=0.0, stroke_p=0.0, entmin_weight=0.0, balance_weight=0.0)
    for model in models:
        runs[f"default (model={model})"] = new_run("default", model=model)
    return runs


def naive_step(run: vatlib.Run) -> None:
    """One step of ``run`` (VAT alone) with the textbook VAT loss: the same batches and update."""
    xl, yl = run.batch(run.labelled, run.cfg.batch_labelled)
    xu, _ = run.batch(run.unlabelled, run.cfg.batch_unlabelled)
    loss = F.cross_entropy(run.model(xl), yl) + naive_vat_loss(run.model, xu, run.cfg.eps, run.cfg.xi)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()


def run_step(args: argparse.Namespace) -> None:
    """``benchmark.py step``: time, record and print."""
    data = vatlib.load_dataset(args.dataset, args.data_root)
    device = vatlib.resolve_device(args.device)
    for path in getattr(args, "experiment", None) or []:  # e.g. models registered with vatlib.register_model
        import_experiment(path)
    runs = step_runs(data, device, args.dataset, [m for m in (getattr(args, "models", "") or "").split(",") if m])
    steps: Dict[str, Callable[[], None]] = {name: run.train_step for name, run in runs.items()}
    steps[TEXTBOOK] = lambda: naive_step(runs[TEXTBOOK])
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
    record = {"median_ms": {k: round(1000 * statistics.median(v), 2) for k, v in times.items()},
              "steps": {k: run.cfg.steps for k, run in runs.items()}, "repeats": args.repeats,
              "warmup": args.warmup, "dataset": args.dataset, "device": str(device), "machine": machine_info(),
              "date": time.strftime("%Y-%m-%d %H:%M")}
    append(Path(args.results), record)
    print(step_table(record))


def step_where(record: Dict) -> str:
    """Where a step record was made: the GPU, or "cpu (isa), N threads", and torch's version."""
    m = record["machine"]
    where = m["cuda"] if record["device"].startswith("cuda") else f"{m['cpu']} ({m.get('isa', '?')})"
    return f"{where}, {m['threads']} threads, torch {m['torch']}"


def step_table(record: Dict) -> str:
    """``| step | ms | x default | steps | minutes (steps x step) |`` of one step record. A record made before steps
    were recorded (its rows are not all presets) shows its medians only."""
    med, steps = record["median_ms"], record.get("steps", {})
    head = ("each recipe's own batches" if steps else
            "an earlier record: 32 labelled + 128 unlabelled images and the small model unless said")
    lines = [f"One training step ({head}), median of {record['repeats']}, {step_where(record)}\n",
             "| step | ms | × default | steps | minutes (steps × step) |", "|---|---|---|---|---|"]
    base = med.get("default")
    for name, ms in med.items():
        n = steps.get(name)
        lines.append(f"| {name} | {ms:.1f} | {f'{ms / base:.2f}' if base else '–'} | {n if n else '–'} | "
                     f"{f'{n * ms / 60000:.1f}' if n else '–'} |")
    if steps:
        lines.append("\nMinutes: the training steps only (evaluations not included).")
    return "\n".join(lines)


def run_loop(args: argparse.Namespace) -> None:
    """``benchmark.py loop``: each preset's `python -m vatlib train` at revision ``args.baseline`` and in this
    working tree, alternately."""
    presets = [p for p in args.presets.split(",") if p]
    unknown = [p for p in presets if p not in vatlib.PRESETS]
    if unknown or not presets:
        raise SystemExit(f"--presets {args.presets!r}: allowed: {', '.join(vatlib.PRESETS)}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(base), args.baseline],
                       check=True)
        try:
            trees = {f"before ({args.baseline})": base, "after (this tree)": REPO}
            histories: Dict[str, Dict[str, List]] = {p: {name: [] for name in trees} for p in presets}
            for rep in range(args.repeats):
                for preset in presets:
                    for name, root in trees.items():
                        out = Path(tmp) / f"run-{preset}-{rep}-{name.split()[0]}"
                        cmd = [sys.executable, "-m", "vatlib", "train", "--preset", preset, "--steps", str(args.steps),
                               "--eval-every", str(args.eval_every), "--out", str(out), "--no-progress",
                               "--data-root", str(REPO / "data"), "--device", args.device]
                        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[1:])}", flush=True)
                        # cwd=root puts that tree's vatlib first on sys.path (before the editable install).
                        done = subprocess.run(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                              text=True, env=dict(os.environ, PYTHONPATH=str(root)))
                        if done.returncode:
                            tail = "\n".join(done.stderr.strip().splitlines()[-3:])
                            raise SystemExit(f"{name}, preset {preset}: `{' '.join(cmd[1:])}` failed:\n{tail}")
                        histories[preset][name].append(json.loads((out / "history.json").read_text()))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    strip = lambda h: [{k: v for k, v in row.items() if k != "time_s"} for row in h]  # noqa: E731
    per_preset = {}
    for preset, by_tree in histories.items():
        before, after = by_tree.values()
        per_preset[preset] = {"same_history": all(strip(x) == strip(y) for x, y in zip(before, after)),
                              "steps_per_s": {name: [args.steps / h[-1]["time_s"] for h in hs]
                                              for name, hs in by_tree.items()}}
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.baseline], capture_output=True,
                            text=True).stdout.strip()
    record = {"baseline": args.baseline, "baseline_commit": commit, "steps": args.steps, "eval_every": args.eval_every,
              "repeats": args.repeats, "presets": per_preset, "machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M")}
    append(Path(args.results), record)
    print(loop_table(record))


def loop_table(record: Dict) -> str:
    """A loop record's table: per preset, steps/s before and after and whether the histories agree."""
    m = record["machine"]
    if "presets" not in record:  # a record of one run of the default, made before loop took --presets
        speed = record["steps_per_s"]
        base = statistics.median(next(iter(speed.values())))
        lines = [f"`python -m vatlib train --steps {record['steps']}` (evaluations included), "
                 f"{m['cpu']}, {m['threads']} threads\n",
                 "| code | runs | steps/s (each run) | × before |", "|---|---|---|---|"]
        for name, values in speed.items():
            lines.append(f"| {name} | {len(values)} | {' '.join(f'{v:.2f}' for v in values)} | "
                         f"{statistics.median(values) / base:.2f} |")
        lines.append(f"\nsame history number for number (all but wall time): "
                     f"{'yes' if record['same_history'] else 'no'}")
        return "\n".join(lines)
    before, after = next(iter(record["presets"].values()))["steps_per_s"]
    lines = [f"`python -m vatlib train --preset P --steps {record['steps']} --eval-every {record['eval_every']}` "
             f"(evaluations included), {m['cpu']}, {m['threads']} threads\n",
             f"| preset | runs | steps/s, {before} | steps/s, {after} | × before | same history number for number "
             "(all but wall time) |", "|---|---|---|---|---|---|"]
    for preset, r in record["presets"].items():
        b, a = r["steps_per_s"][before], r["steps_per_s"][after]
        lines.append(f"| {preset} | {len(b)} | {' '.join(f'{v:.2f}' for v in b)} | {' '.join(f'{v:.2f}' for v in a)} | "
                     f"{statistics.median(a) / statistics.median(b):.2f} | {'yes' if r['same_history'] else 'no'} |")
    return "\n".join(lines)
