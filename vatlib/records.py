"""Results files: lists of JSON records, one per run, shared by the benchmark, the screens and ``tune``.

A record keeps the run's full config (less where it was written), so a results file says exactly
what each number measured; a run already recorded with the same config is not trained again, which
is how an interrupted benchmark, screen or tune resumes. Records made by older versions still match:
a field added since counts as what runs did before it existed, and a record made with an option
removed since matches nothing today. A field the run never read (VAT's radius in a run without VAT) does
not tell two runs apart.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch

from .checkpoint import library_versions, write_json
from .config import TrainConfig, completed_config, removed_options

__all__ = ["append", "differences", "key", "load", "machine_info", "same_config", "screen_table", "unread"]

PathLike = Union[str, Path]
VOLATILE = ("out", "progress")  # where a run was written and whether it showed a bar change nothing it measures


def key(cfg: TrainConfig) -> Dict[str, Any]:
    """What identifies a run in a results file: its config, less the ``VOLATILE`` fields."""
    return {k: v for k, v in cfg.to_dict().items() if k not in VOLATILE}


def unread(config: Dict[str, Any]) -> Tuple[str, ...]:
    """The fields a run with this config never reads: VAT's (eps, xi, n_power) when VAT is off."""
    return ("eps", "xi", "n_power") if config.get("vat_weight") == 0 else ()


def differences(recorded: Dict[str, Any], cfg: TrainConfig) -> Dict[str, Any]:
    """The fields a recorded config (completed for older records) set differently from ``cfg``, with its values;
    fields ``cfg``'s run never reads are not compared."""
    full, now = completed_config(recorded), key(cfg)
    skip = unread(now)
    return {k: full.get(k) for k, v in now.items() if k not in skip and full.get(k) != v}


def same_config(recorded: Dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether a recorded config is ``cfg``'s (see the module docstring for older records)."""
    return not removed_options(recorded) and not differences(recorded, cfg)


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
