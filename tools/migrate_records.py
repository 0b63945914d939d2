"""Bring every results file under benchmarks/results/ to today's TrainConfig and names; running it again changes
nothing.

    python tools/migrate_records.py           # rewrite the files that need it, and say what changed
    python tools/migrate_records.py --check   # only say which files would change (exit status 1 if any)

Whether a record is a run of a config is strict (``vatlib.records.same_config``: the recipes are equal, nothing
filled in), so a record must hold every field of today's TrainConfig. This script fills in, once, what records
made before a field existed ran with, and drops what records of options since removed hold at their off values:

- a field a record lacks gets what runs did before the field existed (``BEFORE_FIELD``; else the field's default);
- an option since removed at the value that turned it off is dropped (the run was one today's library makes);
  one that was on is kept: the record is then a run of no current method, and RESULTS.md lists it among the
  options since removed (``git checkout 75ffb15`` reruns it);
- ``out`` is dropped (a record keeps every field but where the run was written: ``vatlib.records.key``);
- method names that carried a version number or a retired preset name are renamed (``RENAMED``); a renamed
  record keeps the name it was made under in ``renamed_from`` (the first name, if it was renamed before);
- the labels of the step record made before the step benchmark timed every preset lose their version numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import vatlib  # noqa: E402
from vatlib.records import load  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"

# What runs did before these fields existed, where TrainConfig's default now differs: a record without one of them
# ran with this value. A record without any other field ran with TrainConfig()'s default for it.
BEFORE_FIELD: Dict[str, Any] = {"pseudo_weight": 0.0, "stroke_p": 0.0, "final_blocks": 1}
# Left out of the records before (vatlib.records.key dropped it: a progress bar changes nothing a run computes);
# every writer of these files (the benchmark, the screens, tune, vat_drift) ran without a bar.
LEFT_OUT: Dict[str, Any] = {"progress": False}
# Options removed from the library (vatlib 0.4 has them: git checkout 75ffb15), each with the value that turned it
# off.
REMOVED_OFF: Dict[str, Any] = {
    "members": 1, "strong_stroke": 0.0, "balance_steps": 0, "entmin_on": "clean", "cutout": 0, "vat_target": "model",
    "pseudo_teacher": "model", "balanced_labelled": False, "strong_cutout": 0, "elastic": 0.0, "strong_elastic": 0.0,
}
# Method names that carried a version number or a retired preset name -> what each method is.
RENAMED: Dict[str, str] = {
    "best": "small-long",  # the small-long preset (was the best preset)
    "fast": "small-fast",  # the small-fast preset (was the fast preset)
    "default-0.3": "default-small",  # the default recipe on the small model, 3,000 steps, eps 1
    "vat+ent-best": "vat+ent-long-rotate-zoom",  # VAT + entropy min., small model, eps 1, 9,000 steps, rotations, zooms
}
# The step record made before `step` timed every preset: its labels, without version numbers. Its "default" and
# "vat" rows were the default and vat presets of the day; the other rows ran on the small model (one block at 7x7).
STEP_LABELS: Dict[str, str] = {
    "supervised": "supervised, the small model",
    "VAT (vatlib)": "VAT alone, the small model (vatlib)",
    "VAT + entropy min. (0.2's default)": "VAT + entropy min., the small model",
    "0.3's default recipe (VAT + pseudo-labels + stroke)": "the default recipe on the small model",
    "the fast preset (that, and 64 unlabelled images)": "the small-fast preset (that, and 64 unlabelled images)",
    "the default recipe (0.3's, with a second block at 7x7)": "default",
    "the default recipe without VAT (vat_weight=0)": "default without VAT (vat_weight=0)",
    "the vat preset (VAT + entropy min., the default's model)": "vat",
    "VAT (textbook reference)": "VAT alone, the small model (textbook reference)",
}


def migrated_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """``config`` with every TrainConfig field but ``out`` (in TrainConfig's order), then the options since removed
    that were on."""
    defaults = {**vatlib.TrainConfig().to_dict(), **LEFT_OUT, **BEFORE_FIELD}
    fields = [f.name for f in dataclasses.fields(vatlib.TrainConfig) if f.name != "out"]
    unknown = [k for k in config if k not in fields and k not in REMOVED_OFF and k != "out"]
    if unknown:  # neither a field nor a known removed option: say so rather than guess
        raise SystemExit(f"a recorded config holds {unknown}, neither a TrainConfig field nor in REMOVED_OFF")
    on = {k: v for k, v in config.items() if k in REMOVED_OFF and v != REMOVED_OFF[k]}
    return {**{k: config.get(k, defaults[k]) for k in fields}, **on}


def renamed(name: str) -> str:
    """A method name with its method renamed (RENAMED), its overrides kept: "best (eps=2.0)" -> "small-long (eps=2.0)".
    """
    method, sep, extra = name.partition(" (")
    return RENAMED.get(method, method) + sep + extra


def label(record: Dict[str, Any]) -> str:
    """How the notes name a record: its method, its screen's variant, or its tune combination."""
    return record.get("method") or record.get("name") or f"tune {json.dumps(record.get('params'))}"


def migrate(records: List[Dict[str, Any]], notes: List[Tuple[str, Any]]) -> List[Dict[str, Any]]:
    """The records, migrated; what changed is added to ``notes`` as (what, draw)."""
    out = []
    for r in records:
        r = dict(r)
        if "config" in r:
            new = migrated_config(r["config"])
            if new != r["config"]:
                added = sorted(set(new) - set(r["config"]))
                dropped = sorted(set(r["config"]) - set(new))
                notes.append((f"{label(r)}: added {added}, dropped {dropped}", r.get("draw")))
            r["config"] = new
        if "method" in r and renamed(r["method"]) != r["method"]:
            notes.append((f"{r['method']}: renamed {renamed(r['method'])!r}", r.get("draw")))
            r.setdefault("renamed_from", r["method"])  # the name it was made under, if renamed before
            r["method"] = renamed(r["method"])
        if "median_ms" in r and "steps" not in r:  # a step record made before every preset was timed
            labels = {k: STEP_LABELS.get(k, k) for k in r["median_ms"]}
            if any(k != v for k, v in labels.items()):
                notes.append((f"step record: relabelled {sorted(k for k in labels if k != labels[k])}", r.get("date")))
            r["median_ms"] = {labels[k]: v for k, v in r["median_ms"].items()}
        out.append(r)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file would change")
    ap.add_argument("--results", default=str(RESULTS), help="the folder of results files")
    args = ap.parse_args(argv)
    stale = []
    for path in sorted(Path(args.results).glob("*.json")):
        records, notes = load(path), []
        new = migrate(records, notes)
        if json.dumps(new) == json.dumps(records):
            print(f"{path.name}: up to date")
            continue
        stale.append(path.name)
        kept_on = sorted({f"{label(r)}: {k}={v!r}" for r in new if "config" in r
                          for k, v in r["config"].items() if k in REMOVED_OFF})
        print(f"{path.name}: {len(notes)} change(s)" + ("" if args.check else ", written"))
        grouped: Dict[str, List[Any]] = {}
        for what, draw in notes:
            grouped.setdefault(what, []).append(draw)
        for what, draws in grouped.items():
            print(f"    {what} ({len(draws)} record(s): draws {', '.join(map(str, draws))})")
        for item in kept_on:
            print(f"    option since removed, on, kept: {item}")
        if not args.check:
            vatlib.write_json(path, new)
    if args.check and stale:
        raise SystemExit(f"to migrate: {', '.join(stale)} (python tools/migrate_records.py)")


if __name__ == "__main__":
    main()
