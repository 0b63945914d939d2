"""Results files: lists of JSON records, one per run, shared by the benchmark, the screens and ``tune``.

A record keeps the run's full config (less where it was written), so a results file says exactly
what each number measured; a run already recorded with the same recipe (``vatlib.config.recipe``) is
not trained again, which is how an interrupted benchmark, screen or tune resumes.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Union

import torch

from .checkpoint import library_versions, write_json
from .config import TrainConfig, recipe_differences, same_recipe

__all__ = ["append", "differences", "key", "load", "machine_info", "same_config", "screen_table"]

PathLike = Union[str, Path]


def key(cfg: TrainConfig) -> Dict[str, Any]:
    """What a record keeps of a run's config: every field but ``out`` (where it was written changes nothing)."""
    return {k: v for k, v in cfg.to_dict().items() if k != "out"}


def differences(recorded: Dict[str, Any], cfg: TrainConfig) -> Dict[str, Any]:
    """The recipe fields a recorded config set differently from ``cfg``'s, with the recorded values (a field the
    record lacks is None; a field only the record has, e.g. an option since removed, is listed too)."""
    return {k: old for k, (old, _) in recipe_differences(recorded, cfg).items()}


def same_config(recorded: Dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether a recorded config is the same run as ``cfg`` (``vatlib.config.same_recipe``)."""
    return same_recipe(recorded, cfg)


def load(path: PathLike) -> List[Dict[str, Any]]:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else []


def append(path: PathLike, record: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Add ``record`` to the results file as it is on disk now, under a lock, and return the records.

    Reading the file afresh (not rewriting a copy held in memory) lets two processes share one file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = load(path)
        records.append(record)
        write_json(path, records)
    return records


def machine_info() -> Dict[str, str]:
    """Where a record was made. ``isa``: the widest vector instructions, because one CPU name ("AMD EPYC") covers
    machines of different generations whose speeds differ by 2-4x."""
    cpu, flags = platform.processor() or "unknown", set()
    try:
        first_core = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
        info = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first_core if ":" in line)}
        cpu, flags = info.get("model name", cpu), set(info.get("flags", "").split())
    except OSError:
        pass
    isa = ("AVX-512" + (" with bf16" if "avx512_bf16" in flags else "") if "avx512f" in flags
           else "AVX2" if "avx2" in flags else "")
    return {"cpu": cpu, "cores": str(os.cpu_count()), "threads": str(torch.get_num_threads()),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            **({"isa": isa} if isa else {}), **library_versions()}


def screen_table(records: List[Dict[str, Any]]) -> str:
    """The screens' table: one row per record (validation only; the screens never evaluate the test set)."""
    lines = ["| variant | draw | overrides | best validation acc., % (step) | final-step validation, % | train s |",
             "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['name']} | {r['draw']} | {json.dumps(r['overrides'])} | {100 * r['best']['val_acc']:.1f} "
                     f"({r['best']['step']}) | {100 * r['final']['val_acc']:.1f} | {r['train_s']:.0f} |")
    return "\n".join(lines)
