"""Why VAT alone drifts: per-evaluation class proportions, confidence and LDS of a VAT-alone run.

    python benchmarks/experiments/vat_drift.py NAME [--draw 0] [--set field=value,...]

Trains one run (the vat preset: VAT alone on the default recipe's model and length, plus --set) and
records, at every evaluation, the validation predictions per class, the mean top-class probability
of the weight average on validation, and the run's history row (LDS = loss_vat). Each run appends
one record to benchmarks/results/vat-drift.json. Validation only chooses; test is for reporting.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

import vatlib  # noqa: E402
from benchmarks.methods import parse_set, set_option  # noqa: E402
from vatlib.records import append, key, machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "vat-drift.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--draw", type=int, default=0)
    ap.add_argument("--set", type=set_option, default="", help="TrainConfig overrides, e.g. eps=2,pool_first=true "
                                                                "(booleans: True or False, any case)")
    args = ap.parse_args()
    overrides = parse_set(args.set)
    cfg = vatlib.draw_config(vatlib.preset_config("vat", **overrides), args.draw, out="", progress=False)
    rows = []

    def val_probs(model, run) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model(vatlib.to_float(b).to(run.device)).softmax(1).cpu() for b in run.val_images.split(500)])

    def on_eval(run) -> None:
        model = run.eval_model.eval()
        probs = val_probs(model, run)
        # The same weights with their BatchNorm statistics recomputed on 10,240 unlabelled images (a plain
        # average over 40 batches of 256, as the VAT authors' code does before testing): if the drift were
        # in the running statistics only, this accuracy would not fall.
        recal = copy.deepcopy(model)
        for m in recal.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # cumulative average
        recal.train()
        g = torch.Generator().manual_seed(0)
        pick = run.unlabelled.cpu()[torch.randperm(len(run.unlabelled), generator=g)[:10240]]
        with torch.no_grad():
            for b in pick.split(256):
                recal(vatlib.to_float(run.data.train_images[b]).to(run.device))
        recal.eval()
        recal_acc = (val_probs(recal, run).argmax(1) == run.val_labels).float().mean().item()
        live_acc = (val_probs(run.model.eval(), run).argmax(1) == run.val_labels).float().mean().item()
        run.model.train()
        pred = probs.argmax(1)
        row = dict(run.history[-1])
        row["val_pred_counts"] = torch.bincount(pred, minlength=run.num_classes).tolist()
        row["val_conf"] = probs.max(1).values.mean().item()
        row["val_acc_bn_recomputed"], row["val_acc_live_weights"] = recal_acc, live_acc
        row["val_per_class_acc"] = [(pred[run.val_labels == c] == c).float().mean().item() for c in range(run.num_classes)]
        rows.append(row)
        print(f"{args.name} step {row['step']:5d} val {row['val_acc']:.4f} test {row['test_acc']:.4f} "
              f"recal {recal_acc:.4f} live {live_acc:.4f} lds {row.get('loss_vat', float('nan')):.4f} conf {row['val_conf']:.3f} counts {row['val_pred_counts']}",
              flush=True)

    t0 = time.time()
    result = vatlib.train(cfg, on_eval=on_eval)
    record = {"name": args.name, "draw": args.draw, "overrides": overrides, "config": key(cfg),
              "best": result.best, "final": result.final, "time_s": round(time.time() - t0, 1), "evals": rows}
    record["machine"] = machine_info()
    append(RESULTS, record)  # under a lock: two runs side by side may share the file
    print(f"{args.name}: best {result.best} final {result.final} ({record['time_s']} s)", flush=True)


if __name__ == "__main__":
    main()
