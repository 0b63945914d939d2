"""Benchmarks: accuracy over labelled draws, and the time of one training step.

    python benchmarks/benchmark.py accuracy [--methods supervised,vat,default,best] [--draws 5]
    python benchmarks/benchmark.py step [--batch 128] [--repeats 30]

`accuracy` trains every method on every labelled draw (draw k uses data_seed=k and seed=k, so both
the 100 labelled images and the training randomness change) and prints a markdown table of the
test accuracy of the checkpoint chosen on validation, the final-step test accuracy, wall time
and speed. Raw results go to a JSON file after every run; an interrupted benchmark resumes
where it stopped (runs already in the file with the same config are skipped).

`step` times one optimiser step on one batch: supervised-only, vatlib's VAT, and a naive VAT
reference (the textbook implementation, whose power iteration calls .backward() and so computes
every weight gradient too), interleaved, and prints medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import vatlib  # noqa: E402

# Each method is a preset plus overrides; "default" is `python -m vatlib train`, "best" is `--preset best`.
METHODS: Dict[str, tuple] = {
    "supervised": ("supervised", {}),  # same labels, model, augmentation, steps
    "vat": ("default", dict(entmin_weight=0.0, balance_weight=0.0)),  # VAT alone
    "default": ("default", {}),  # VAT + entropy minimisation
    "best": ("best", {}),  # the recipe best_model.pth is trained with
}


def machine_info() -> Dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "threads": str(torch.get_num_threads()),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            **vatlib.checkpoint.library_versions()}


def _load(path: Path) -> List[Dict]:
    return json.loads(path.read_text()) if path.exists() else []


def run_accuracy(args: argparse.Namespace) -> None:
    results = Path(args.results)
    records = _load(results)
    data = vatlib.load_dataset(args.dataset, args.data_root)
    for method in args.methods.split(","):
        if method not in METHODS:
            raise SystemExit(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
        for draw in range(args.draws):
            preset, overrides = METHODS[method]
            cfg = vatlib.preset_config(preset, **overrides, data_seed=draw, seed=draw, dataset=args.dataset,
                                       data_root=args.data_root, device=args.device, progress=False,
                                       out=str(Path(args.runs) / f"{method}-draw{draw}"))
            key = {k: v for k, v in cfg.to_dict().items() if k not in ("out", "progress")}
            if any(r["method"] == method and r["config"] == key for r in records):
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {method} draw {draw} ...", flush=True)
            t0 = time.perf_counter()
            res = vatlib.train(cfg, data=data, overwrite=True)  # scratch folder; the record is the JSON
            wall = time.perf_counter() - t0
            train_time = res.history[-1]["time_s"]
            records.append({"method": method, "draw": draw, "config": key, "best": res.best, "final": res.final,
                            "wall_s": round(wall, 1), "train_s": train_time, "steps": cfg.steps,
                            "steps_per_s": round(cfg.steps / train_time, 2), "machine": machine_info()})
            vatlib.write_json(results, records)
            print(f"    test {res.best['test_acc']:.2%} (best val, step {res.best['step']}), "
                  f"final {res.final['test_acc']:.2%}, {wall:.0f} s", flush=True)
    print(accuracy_table(records, args.methods.split(",")))


def _mean_std(xs: List[float]) -> str:
    if len(xs) == 1:
        return f"{100 * xs[0]:.2f}"
    return f"{100 * statistics.mean(xs):.2f} ± {100 * statistics.stdev(xs):.2f}"


def accuracy_table(records: List[Dict], methods: List[str]) -> str:
    lines = ["| method | draws | test acc. per draw, % (checkpoint chosen on validation) | mean ± std, % | "
             "final-step mean ± std, % | train time per run, s | steps | steps/s | threads |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in methods:
        rows = sorted((r for r in records if r["method"] == method), key=lambda r: r["draw"])
        if not rows:
            continue
        best = [r["best"]["test_acc"] for r in rows]
        final = [r["final"]["test_acc"] for r in rows]
        lines.append(
            f"| {method} | {len(rows)} | {' '.join(f'{100 * a:.2f}' for a in best)} | {_mean_std(best)} | "
            f"{_mean_std(final)} | {statistics.mean(r['train_s'] for r in rows):.0f} | {rows[0]['steps']} | "
            f"{statistics.mean(r['steps_per_s'] for r in rows):.1f} | {rows[0]['machine']['threads']} |")
    m = records[0]["machine"] if records else machine_info()
    lines.append(f"\n{m['cpu']}, {m['cores']} cores; torch {m['torch']}, torchvision {m['torchvision']}; "
                 f"draw k uses data_seed=k and seed=k.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- step-time micro-benchmark

def naive_vat_loss(model: torch.nn.Module, x: torch.Tensor, eps: float, xi: float) -> torch.Tensor:
    """The textbook VAT loss many public implementations use: the power iteration calls .backward()
    on the whole model (computing every weight gradient, then throwing them away) and recomputes the
    clean prediction. Reference for timing only; it also lets BN statistics drift."""
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
    cfg = vatlib.TrainConfig()
    torch.manual_seed(0)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = vatlib.build_model(cfg.model, num_classes=10, width=cfg.width).to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = vatlib.load_dataset(args.dataset, args.data_root)
    x = vatlib.to_float(data.train_images[: args.batch]).contiguous(memory_format=fmt)
    y = data.train_labels[: args.batch]

    def supervised():
        loss = F.cross_entropy(model(x), y)
        return loss

    def vat_vatlib():
        logits = model(x)
        return F.cross_entropy(logits, y) + vatlib.vat_loss(model, x, eps=cfg.eps, xi=cfg.xi, logits=logits)

    def vat_naive():
        return F.cross_entropy(model(x), y) + naive_vat_loss(model, x, cfg.eps, cfg.xi)

    steps: Dict[str, Callable] = {"supervised": supervised, "vat (vatlib)": vat_vatlib, "vat (naive reference)": vat_naive}
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for rep in range(args.warmup + args.repeats):
        for name, loss_fn in steps.items():  # interleaved, so drift hits every variant alike
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_fn().backward()
            opt.step()
            if rep >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    med = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print(f"one training step on the same batch of {args.batch} MNIST images, {cfg.model} width {cfg.width}, "
          f"median of {args.repeats}, {torch.get_num_threads()} threads\n")
    print("| step | ms | × supervised | × naive VAT |\n|---|---|---|---|")
    for name, ms in med.items():
        print(f"| {name} | {ms:.1f} | {ms / med['supervised']:.2f} | {ms / med['vat (naive reference)']:.2f} |")
    m = machine_info()
    print(f"\n{m['cpu']}, {m['cores']} cores; torch {m['torch']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    acc = sub.add_parser("accuracy", help="methods x labelled draws -> table + JSON")
    acc.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {list(METHODS)}")
    acc.add_argument("--draws", type=int, default=5)
    acc.add_argument("--results", default="benchmarks/results/accuracy.json", help="raw results (JSON), read and extended")
    acc.add_argument("--runs", default="runs/bench", help="folder for each run's checkpoint and history")
    acc.add_argument("--table-only", action="store_true", help="print the table of the results file, train nothing")
    step = sub.add_parser("step", help="time one training step: supervised vs VAT vs naive VAT")
    step.add_argument("--batch", type=int, default=128)
    step.add_argument("--repeats", type=int, default=30)
    step.add_argument("--warmup", type=int, default=5)
    for p in (acc, step):
        p.add_argument("--dataset", default="MNIST")
        p.add_argument("--data-root", default="data")
        p.add_argument("--device", default="auto")
        p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "accuracy" and args.table_only:
        print(accuracy_table(_load(Path(args.results)), args.methods.split(",")))
    elif args.what == "accuracy":
        run_accuracy(args)
    else:
        run_step(args)


if __name__ == "__main__":
    main()
