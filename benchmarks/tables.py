"""The accuracy tables: test accuracy over labelled draws (checkpoint chosen on validation), time to accuracy,
draws paired between two methods, and the paper preset against the VAT paper.

A table reads a results file's records; with ``args`` (the options a method's config is built with) it keeps the
records that are runs of the method's config today (``methods.current_records``), without, every record of the
name. Times compare only within one machine, and only between runs that had the cores to themselves.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Dict, List, Optional, Tuple

from benchmarks.methods import current_records
from vatlib.records import machine_info

THRESHOLDS = (0.98, 0.985, 0.99)  # test accuracies of the time-to-accuracy table (MNIST's; --thresholds for others)


def draw_list(draws: List[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    parts: List[str] = []
    for d in draws:
        if parts and d == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{d}"
        else:
            parts.append(str(d))
    return ", ".join(parts)


def _timed(rows: List[Dict]) -> Tuple[List[Dict], List[Dict]]:
    """The runs whose times count, and those left out: a record with a "note" shared the cores, so it is
    left out, unless every run shared them (then their times are all there is)."""
    alone = [r for r in rows if "note" not in r]
    return (alone, [r for r in rows if "note" in r]) if alone else (rows, [])


def mean_std(xs: List[float]) -> str:
    """Accuracies as percent: "99.04 ± 0.14" (one value: "99.04")."""
    if len(xs) == 1:
        return f"{100 * xs[0]:.2f}"
    return f"{100 * statistics.mean(xs):.2f} ± {100 * statistics.stdev(xs):.2f}"


def _draws(rows: List[Dict]) -> str:
    """ "draws 0-4" for consecutive draws, "draws 0, 2, 5" otherwise."""
    ds = [r["draw"] for r in rows]
    if len(ds) > 2 and ds == list(range(ds[0], ds[-1] + 1)):
        return f"draws {ds[0]}–{ds[-1]}"
    return ("draw " if len(ds) == 1 else "draws ") + ", ".join(map(str, ds))


def machine_name(m: Dict[str, str]) -> str:
    """A record's machine as the tables name it: "cpu (isa), cores; versions" (records before isa: "cpu, ...")."""
    isa = f" ({m['isa']})" if m.get("isa") else ""
    return f"{m['cpu']}{isa}, {m['cores']} cores; torch {m['torch']}, torchvision {m['torchvision']}"


def _by_machine(rows: List[Dict]) -> Dict[str, List[Dict]]:
    """A method's rows grouped by where they ran (``machine_name``), in draw order."""
    groups: Dict[str, List[Dict]] = {}
    for r in rows:
        groups.setdefault(machine_name(r["machine"]), []).append(r)
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
            f"| {method} | {len(rows)} | {' '.join(f'{100 * a:.2f}' for a in best)} | {mean_std(best)} | "
            f"{100 * min(best):.2f} | {mean_std(final)} | {per_machine('train_s', '.0f')} | "
            f"{rows[0]['steps']} | {per_machine('steps_per_s', '.1f')} | "
            f"{'/'.join(sorted({r['machine']['threads'] for g in timed.values() for r in g}))} |")
        split |= len(groups) > 1
        for where, g in groups.items():
            machines.setdefault(where, []).append(method if len(groups) == 1 else f"{method} ({_draws(g)})")
    if not machines:  # an empty table still names where it would have run
        machines[machine_name(machine_info())] = []
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
        lines.append(f"| {a} | {b} | {draw_list(draws)} | {' '.join(f'{x:+.2f}' for x in diff)} | "
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
            f"| paper | {draw_list([r['draw'] for r in rows])} | {per_draw} | {statistics.mean(errors):.2f}{spread} | "
            f"{min(PAPER_ERRORS.values()):.2f} |\n\nThe VAT paper's MNIST-100 errors: {papers}.")
