"""Command line: ``python -m vatlib train [...]``, ``python -m vatlib tune [...]`` and ``python -m vatlib evaluate PATH``.

Every field of ``TrainConfig`` is a ``train`` option (``--batch-unlabelled 64``, ``--no-progress``...),
so the command line and the library can never disagree about what a run means.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from .data import DataError, load_dataset
from .config import PRESETS, TrainConfig, parse_draws, preset_config
from .inference import predict, resolve_device
from .run import Run
from .runs import RunExistsError, TrainingInterrupted, train
from .tune import __doc__ as TUNE_DOC
from .tune import tune, tune_table


def _weights(text: str) -> dict:
    """--term-weights 'mi=0.5,other=1' -> {"mi": 0.5, "other": 1.0}."""
    try:
        return {k: float(v) for k, v in (item.split("=") for item in filter(None, text.split(",")))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: name=weight,... (e.g. mi=0.5)") from None


def _add_config_options(parser: argparse.ArgumentParser, lists: bool = False) -> None:
    """One option per TrainConfig field; with ``lists``, numbers and strings take comma-separated lists (for tune)."""
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        help_text = f"{field.metadata.get('help', '')} (default: {default})".replace("%", "%%")
        # SUPPRESS: only flags given on the command line reach the namespace, so they can override a preset.
        if isinstance(default, dict):
            parser.add_argument(flag, type=_weights, default=argparse.SUPPRESS, metavar="NAME=W[,...]", help=help_text)
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif lists:
            kind = type(default)
            parser.add_argument(flag, type=lambda text, kind=kind: [kind(v) for v in text.split(",")],
                                default=argparse.SUPPRESS, metavar=f"{kind.__name__.upper()}[,...]", help=help_text)
        else:
            parser.add_argument(flag, type=type(default), default=argparse.SUPPRESS,
                                metavar=type(default).__name__.upper(), help=help_text)


def _draws(text: str) -> list:
    try:
        return parse_draws(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _given(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line (the others are absent: argparse.SUPPRESS)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in fields}


def _cmd_train(args: argparse.Namespace) -> int:
    given = _given(args)
    if args.supervised_only:  # another name for --preset supervised
        if args.preset not in ("default", "supervised"):
            raise ValueError(f"--supervised-only is --preset supervised; it cannot be combined with --preset {args.preset}")
        args.preset = "supervised"
    given.setdefault("out", f"runs/{args.preset}")
    cfg = preset_config(args.preset, **given)

    def banner(run: Run) -> None:
        print(f"vatlib train{' (resuming at step ' + str(run.step + 1) + ')' if run.step else ''}: {cfg.dataset}, "
              f"{cfg.per_class} labels/class, {'VAT' if run.terms else 'supervised-only'} on {run.device}, "
              f"{cfg.steps} steps, {torch.get_num_threads()} threads -> {run.cfg.out}\n  data: {run.data.source}", flush=True)

    t0 = time.perf_counter()
    try:
        result = train(cfg, resume=args.resume, overwrite=args.overwrite, on_start=banner)
    except TrainingInterrupted as e:
        print(f"{e}", file=sys.stderr)
        if e.resume_path is not None:
            argv = [a for a in (args.argv or sys.argv[1:]) if a not in ("--resume", "--overwrite")]
            print("resume with: python -m vatlib " + " ".join(shlex.quote(a) for a in argv) + " --resume", file=sys.stderr)
        return 130
    wall = time.perf_counter() - t0
    b, f = result.best, result.final
    print(f"best on validation: step {b['step']}, val acc {b['val_acc']:.2%}, test acc {b['test_acc']:.2%} "
          f"-> {result.checkpoint}")
    print(f"final step {f['step']}: val acc {f['val_acc']:.2%}, test acc {f['test_acc']:.2%}")
    print(f"test accuracy: {b['test_acc']:.2%}  (checkpoint chosen on validation; wall time {wall:.0f} s)")
    return 0


def _flag(field: str, value: object) -> str:
    """The command-line spelling of one TrainConfig setting: --eps 2.0, --no-progress, --out 'my runs'."""
    name = field.replace("_", "-")
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {shlex.quote(str(value))}"


def _cmd_tune(args: argparse.Namespace) -> int:
    given = _given(args)
    grid = {k: v for k, v in given.items() if isinstance(v, list) and len(v) > 1}
    fixed = {k: (v[0] if isinstance(v, list) else v) for k, v in given.items() if k not in grid}
    if not grid:
        raise ValueError("nothing to tune: give at least one option a comma-separated list, e.g. --eps 0.5,1,2,4,8")
    for field in ("seed", "data_seed", "out"):
        if field in grid:
            raise ValueError(f"--{field.replace('_', '-')} cannot take a list in tune (draws set the seeds: --draws 0,1)")
    out = fixed.pop("out", f"runs/tune-{fixed.get('dataset', 'MNIST')}")
    base = preset_config(args.preset, **{"steps": 1000, "eval_every": 250, **fixed})
    n_runs = len(args.draws) * math.prod(len(v) for v in grid.values())
    print(f"vatlib tune: {base.dataset}, {', '.join(f'{k} in {v}' for k, v in grid.items())}; {n_runs} runs of "
          f"{base.steps} steps (draws {','.join(map(str, args.draws))}), chosen on validation accuracy -> {out}", flush=True)
    records = tune(base, grid, draws=args.draws, out=out)
    table = tune_table(records)
    Path(out, "tune.md").write_text(table + "\n")
    print("\n" + table + "\n")
    best = records[0]["params"]
    options = {**{k: v for k, v in fixed.items() if k not in ("steps", "eval_every")}, **best}
    argv = (["--preset", args.preset] if args.preset != "default" else []) + [_flag(k, v) for k, v in options.items()]
    print(f"best on validation: {', '.join(f'{k}={v}' for k, v in best.items())} "
          f"({records[0]['val_acc']:.2%} mean validation accuracy; table in {out}/tune.md)")
    print("train it with the full recipe:  python -m vatlib train " + " ".join(argv))
    return 0


def _describe(spec: dict) -> str:
    """A checkpoint's model spec in words: "convnet (width 16)", "mlp (1200-600-300-150)"."""
    if spec["name"] == "custom":
        return f"a model of one's own ({spec.get('class')})"
    if spec["name"] == "mlp":
        return f"mlp ({'-'.join(map(str, spec['hidden']))})"
    return f"{spec['name']} (width {spec.get('width')})"


def _cmd_evaluate(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.path)
    if ckpt.get("data", {}).get("source") == "arrays":
        raise CheckpointError(f"{args.path}: trained on arrays given in Python ({ckpt['data']['name']}), which the "
                              f"command line cannot load; evaluate it with vatlib.evaluate(vatlib.load_model(path), "
                              f"images, labels)")
    if ckpt["model"]["name"] == "custom":
        raise CheckpointError(f"{args.path}: holds a model of one's own ({ckpt['model'].get('class')}), which the "
                              f"command line cannot build; evaluate it with vatlib.evaluate(vatlib.load_model(path, "
                              f"model=YourModel(...)), images, labels)")
    model = model_from_checkpoint(ckpt, args.path).to(resolve_device(args.device))
    dataset = ckpt["config"].get("dataset", "MNIST")
    data = load_dataset(dataset, args.data_root)
    labels = data.test_labels
    n_classes = int(labels.max()) + 1
    if model.num_classes != n_classes:
        raise CheckpointError(f"{args.path}: the model predicts {model.num_classes} classes but {dataset} has {n_classes}")
    preds = predict(model, data.test_images)
    correct = preds == labels
    print(f"{args.path}: {_describe(ckpt['model'])}, step {ckpt['step']}, "
          f"{len(ckpt['labelled_indices'])} labelled images, seed {ckpt['config'].get('seed')}, "
          f"data seed {ckpt['config'].get('data_seed')}")
    print(f"recorded at save time: val acc {ckpt['val_acc']:.2%}, test acc {ckpt['test_acc']:.2%}")
    print(f"{dataset} test accuracy: {correct.float().mean().item():.2%} ({int(correct.sum())}/{len(labels)})")
    print("per class: " + "  ".join(
        f"{c}: {correct[labels == c].float().mean().item():.2%}" for c in range(n_classes)))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vatlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train a model (defaults: the shipped VAT recipe)")
    p_train.add_argument("--preset", default="default", choices=sorted(PRESETS),
                         help="named recipe; other flags override it (default: default)")
    _add_config_options(p_train)
    p_train.add_argument("--supervised-only", action="store_true",
                         help="the same as --preset supervised: cross-entropy on the labelled images only")
    what = p_train.add_mutually_exclusive_group()
    what.add_argument("--resume", action="store_true",
                      help="continue the interrupted run in --out from its last.pth (same options as the run)")
    what.add_argument("--overwrite", action="store_true",
                      help="replace the run already in --out (without it, such a folder is refused and left as is)")
    p_train.set_defaults(func=_cmd_train)
    p_tune = sub.add_parser("tune", help="choose settings (eps, ...) on the validation split with short runs",
                            description=(TUNE_DOC or "").split("\n\n")[1],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p_tune.add_argument("--preset", default="default", choices=sorted(PRESETS), help="recipe the grid is applied to")
    p_tune.add_argument("--draws", type=_draws, default=[0],
                        help="labelled draws to average over (draw k: data_seed = seed = k): a count N (draws "
                             "0..N-1), a range A-B or a list A,B (default: draw 0)")
    _add_config_options(p_tune, lists=True)
    p_tune.set_defaults(func=_cmd_tune)
    p_eval = sub.add_parser("evaluate", help="test accuracy (overall and per class) of a checkpoint")
    p_eval.add_argument("path", help="checkpoint file, e.g. best_model.pth")
    p_eval.add_argument("--data-root", default="data", help="folder holding <dataset>/raw/")
    p_eval.add_argument("--device", default="cpu", help="auto, cpu, cuda[:N] or mps")
    p_eval.set_defaults(func=_cmd_evaluate)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, DataError, CheckpointError, FloatingPointError, RunExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; `train --resume` continues from the state of the last evaluation, if one was saved",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
