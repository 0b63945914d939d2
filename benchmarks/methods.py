"""The benchmark's methods (a preset plus overrides each, recorded by name), the one ``--set`` parser of the
benchmarks, and which records are a method's runs.

Whether a record is a run of a config is ``vatlib.records.same_config`` (``vatlib.config.same_recipe``), the
library's one statement of what makes two runs the same; nothing here keeps a list of fields of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import vatlib
from vatlib.records import same_config

# The small model (one conv block at 7x7, 33k parameters) at eps 1, trained for 3,000 steps: the model, length
# and radius of the rows of the ablation that come before the default's second block and 3,500 steps.
SMALL_3K: Dict[str, Any] = dict(final_blocks=1, steps=3000, eps=1.0)

# Each method is a preset plus overrides; "default" is `python -m vatlib train`, "small-long" is
# `--preset small-long`. The rows of the ablation add one ingredient each: supervised, vat+ent, vat+pseudo,
# default-small, default; every row up to default-small is on SMALL_3K.
METHODS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "supervised": ("supervised", SMALL_3K),  # same labels, model, shifts, optimiser and steps, no unlabelled term
    "supervised-default-model": ("supervised", {}),  # the supervised preset: the default's model and 3,500 steps
    "vat": ("vat", {}),  # VAT on its own (with entropy minimisation): the vat preset, the default's model and length
    "vat+ent": ("vat", SMALL_3K),  # the same on SMALL_3K
    "vat+pseudo": ("default", dict(SMALL_3K, stroke_p=0.0)),  # VAT + FlexMatch pseudo-labels instead of the entropy
    "default-small": ("default", SMALL_3K),  # + a random stroke on the labelled images: the default recipe on SMALL_3K
    "default": ("default", {}),  # + a second conv block at 7x7, eps 3 and 3,500 steps
    "default-no-vat": ("default", dict(vat_weight=0.0)),  # the default without VAT: what VAT adds, paired by draw
    # The same at the default's wall time: a step without VAT costs about half the default's (the step table).
    "default-no-vat-equal-time": ("default", dict(vat_weight=0.0, steps=7000)),
    # Not semi-supervised: the default's model and steps trained on every training label (59,000), 128 per batch.
    # The ceiling the 100-label runs are measured against.
    "all-labels": ("supervised", dict(all_labels=True, batch_labelled=128)),
    # The VAT paper's MNIST setup (its MLP, eps 5, 100 + 250 images, Adam 0.002 x0.9 every 500 updates, 50,000
    # updates): its reported figure is the final step's test error, 1.36 %. A draw may span several invocations.
    "paper": ("paper", {}),
    "default-compiled": ("default", dict(compile=True)),  # the same with torch.compile (its compile time counts)
    "small-fast": ("small-fast", {}),  # the small-fast preset: 64 unlabelled images a step, the first block pooled first
    "small-long": ("small-long", {}),  # the small-long preset: the default recipe on the small model, 9,000 steps
    # VAT + entropy minimisation on the small model at eps 1, 9,000 steps, with rotations (10 degrees) and zooms (0.1).
    "vat+ent-long-rotate-zoom": ("vat", dict(SMALL_3K, steps=9000, eval_every=500, max_rotate=10.0, max_scale=0.1)),
}


def import_experiment(path: str) -> None:
    """Import a file under benchmarks/experiments/: it registers its terms, schedules or models with vatlib."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def parse_set(text: str) -> Dict[str, Any]:
    """TrainConfig overrides written field=value,...: the one parser of ``--set`` (and of the overrides in a
    recorded method name, e.g. "default (eps=4.0)") in the benchmarks.

    Values are typed like the field's default; a boolean is True or False, in any case. Raises ValueError naming
    the field and the values it takes.

    Example:
        >>> parse_set("eps=4,pool_first=true,max_shift=3,dataset=KMNIST")
        {'eps': 4.0, 'pool_first': True, 'max_shift': 3, 'dataset': 'KMNIST'}
        >>> parse_set("")
        {}
    """
    defaults = vatlib.TrainConfig()
    fields = [f.name for f in dataclasses.fields(defaults)]
    out: Dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep:
            raise ValueError(f"--set {item!r}: expected field=value")
        if name not in fields:
            raise ValueError(f"--set {item!r}: {name!r} is not a TrainConfig field; allowed: {', '.join(fields)}")
        kind = type(getattr(defaults, name))
        if kind is bool:
            if value.lower() not in ("true", "false"):
                raise ValueError(f"--set {item!r}: {name} takes True or False (in any case)")
            out[name] = value.lower() == "true"
        elif kind in (int, float, str):
            try:
                out[name] = kind(value)
            except ValueError:
                allowed = {int: "an integer", float: "a number"}[kind]
                raise ValueError(f"--set {item!r}: {name} takes {allowed}") from None
        else:
            raise ValueError(f"--set {item!r}: {name} ({kind.__name__}) cannot be given with --set; allowed: fields "
                             "that take a number, a string, True or False")
    return out


def set_option(text: str) -> str:
    """``--set``'s argparse type: the text, once ``parse_set`` has read it (its error is argparse's)."""
    try:
        parse_set(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def method_name(method: str, args: argparse.Namespace) -> str:
    """The method as recorded: its name, plus the --set overrides, e.g. "default (eps=4.0)"."""
    extra = parse_set(getattr(args, "set", "") or "")
    return method + (f" ({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")


def known_methods(names: List[str]) -> List[str]:
    """``names``, once each is a method (with or without overrides); else SystemExit naming the first unknown."""
    for name in names:
        method = name.partition(" (")[0]
        if method not in METHODS:
            raise SystemExit(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    return names


def method_config(name: str, draw: int, args: argparse.Namespace) -> vatlib.TrainConfig:
    """The config of a method by its recorded name ("default", or "default (eps=4.0)" with overrides) on a draw."""
    method, _, extra = name.partition(" (")
    known_methods([method])
    preset, overrides = METHODS[method]
    overrides = {**overrides, **parse_set(extra.rstrip(")").replace(", ", ","))}
    out = Path(args.runs) / f"{args.dataset}-{name.replace(' ', '')}-draw{draw}"
    cfg = vatlib.preset_config(preset, **overrides, dataset=args.dataset, data_root=args.data_root, device=args.device,
                               progress=False, out=str(out))
    return vatlib.draw_config(cfg, draw)


def current_name(name: str) -> bool:
    """Whether a recorded method name is one this version can still train (its method and --set fields exist)."""
    method, _, extra = name.partition(" (")
    try:
        parse_set(extra.rstrip(")").replace(", ", ","))
    except ValueError:
        return False
    return method in METHODS


def recorded(records: List[Dict], name: str, cfg: vatlib.TrainConfig) -> bool:
    """Whether ``records`` hold a run of method ``name`` with config ``cfg`` (the benchmark then skips it)."""
    return any(r["method"] == name and same_config(r["config"], cfg) for r in records)


def current_records(records: List[Dict], method: str, args: Optional[argparse.Namespace]) -> List[Dict]:
    """The records of ``method`` (a recorded name, e.g. "default (eps=4.0)") that are runs of the config the method
    has now (every record of that name when ``args`` is None), by draw."""
    rows = [r for r in records if r["method"] == method]
    if args is not None:
        rows = [r for r in rows if same_config(r["config"], method_config(method, r["draw"], args))]
    return sorted(rows, key=lambda r: r["draw"])
