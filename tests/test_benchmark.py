"""The benchmarks and screens: tables, records, resuming, the migrated results files, and the committed RESULTS.md
being what they generate."""

import argparse
import dataclasses
import importlib.util
import json
import re

import pytest
import torch
from torch import nn

import benchmarks.accuracy as accuracy
import benchmarks.benchmark as cli
import benchmarks.methods as methods
import benchmarks.report as report
import benchmarks.screen as screen
import benchmarks.speed as speed
import benchmarks.tables as tables
import vatlib
from helpers import REPO
from vatlib import vat_loss
from vatlib.records import key, load

MACHINE = {"cpu": "cpu", "cores": "2", "threads": "2", "torch": "t", "torchvision": "v"}
ARGS = argparse.Namespace(dataset="MNIST", data_root="data", device="cpu", runs="runs/bench", results="r.json")


def _migration():
    spec = importlib.util.spec_from_file_location("migrate_records", REPO / "tools" / "migrate_records.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_naive_reference_matches_vat_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).double()
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    torch.manual_seed(1)
    naive = speed.naive_vat_loss(model, x, eps=1.0, xi=1e-6)
    assert all(p.grad is None for p in model.parameters())  # it cleaned up after its full backward
    torch.manual_seed(1)
    ours = vat_loss(model, x, eps=1.0, xi=1e-6)
    assert torch.allclose(naive, ours, rtol=1e-9), (naive, ours)


def test_accuracy_table_formats_mean_std_and_worst():
    records = [{"method": "vat", "draw": d, "best": {"test_acc": a}, "final": {"test_acc": a - 0.01},
                "train_s": 100.0, "steps": 10, "steps_per_s": 0.1, "machine": MACHINE}
               for d, a in enumerate([0.98, 0.99, 1.0])]
    table = tables.accuracy_table(records, ["vat"])
    assert "| vat | 3 | 98.00 99.00 100.00 | 99.00 ± 1.00 | 98.00 | 98.00 ± 1.00 | 100 | 10 | 0.1 | 2 |" in table
    assert table.endswith("\ncpu, 2 cores; torch t, torchvision v; draw k uses data_seed=k and seed=k.")
    other = [dict(r, method="default", machine=dict(MACHINE, cpu="other")) for r in records]
    table = tables.accuracy_table(records + other, ["vat", "default"])  # rows from two machines: each is named
    assert table.endswith("\nvat: cpu, 2 cores; torch t, torchvision v; default: other, 2 cores; torch t, "
                          "torchvision v. Draw k uses data_seed=k and seed=k.")

    newer = [dict(r, method="default", machine=dict(MACHINE, isa="AVX-512")) for r in records]  # same name, newer CPU
    table = tables.accuracy_table(records + newer, ["vat", "default"])
    assert table.endswith("\nvat: cpu, 2 cores; torch t, torchvision v; default: cpu (AVX-512), 2 cores; torch t, "
                          "torchvision v. Draw k uses data_seed=k and seed=k.")

    later = [dict(r, draw=r["draw"] + 3, train_s=300.0, steps_per_s=0.2, machine=dict(MACHINE, cpu="other"))
             for r in records]
    table = tables.accuracy_table(records + later, ["vat"])  # one method, draws 0-2 here and 3-5 there
    assert "| 6 | 98.00 99.00 100.00 98.00 99.00 100.00 |" in table
    assert "| 100 / 300 | 10 | 0.1 / 0.2 | 2 |" in table  # times never averaged across machines
    assert "vat (draws 0–2): cpu, 2 cores" in table and "vat (draws 3–5): other, 2 cores" in table


def test_time_to_accuracy_is_the_first_evaluation_at_or_above_the_threshold():
    history = [{"time_s": 10.0, "test_acc": 0.97}, {"time_s": 20.0, "test_acc": 0.985},
               {"time_s": 30.0, "test_acc": 0.979}, {"time_s": 40.0, "test_acc": 0.991}]
    assert [tables.time_to_accuracy(history, t) for t in (0.98, 0.985, 0.99, 0.995)] == [20.0, 20.0, 40.0, None]
    records = [{"method": "m", "draw": d, "history": h} for d, h in enumerate([history, history[:3]])]
    table = tables.time_to_accuracy_table(records, ["m"])
    assert "| m | 2 | 20 (2/2) | 20 (2/2) | 40 (1/2) |" in table, table
    shared = [dict(records[0], draw=2, history=[dict(row, time_s=5 * row["time_s"]) for row in history], note="shared")]
    table = tables.time_to_accuracy_table(records + shared, ["m"])  # a run that shared the cores is not timed
    assert "| m | 2 | 20 (2/2) | 20 (2/2) | 40 (1/2) |" in table, table


def test_times_come_from_the_runs_that_had_the_cores_to_themselves():
    records = [{"method": "vat", "draw": d, "best": {"test_acc": 0.99}, "final": {"test_acc": 0.99},
                "train_s": 100.0, "steps": 10, "steps_per_s": 0.1, "machine": MACHINE} for d in range(3)]
    records[2].update(train_s=900.0, steps_per_s=0.01, machine=dict(MACHINE, threads="1"), note="beside another run")
    table = tables.accuracy_table(records, ["vat"])
    assert "| vat | 3 | 99.00 99.00 99.00 | 99.00 ± 0.00 | 99.00 | 99.00 ± 0.00 | 100 | 10 | 0.1 | 2 |" in table
    assert "left out, as they shared the cores (their records say with what): vat (draw 2)." in table
    assert "Every run" not in table
    for r in records:
        r["note"] = "all shared"  # then the times are all there is, and the table says they were shared
    table = tables.accuracy_table(records, ["vat"])
    assert "| 367 | 10 | 0.1 | 1/2 |" in table
    assert "Every run of vat shared the cores" in table
    for r in records:
        r["history"] = [{"step": 10, "time_s": 50.0, "test_acc": 0.99}]
    assert "Every run of vat shared the cores" in tables.time_to_accuracy_table(records, ["vat"])


def test_a_record_is_a_run_of_a_method_exactly_when_the_recipes_are_equal():
    """The benchmark asks the library (vatlib.config.recipe): where and how a run was carried out (threads, device,
    progress) and VAT's radius in a run without VAT do not tell records apart; a field the record lacks does (no
    back-filling), and so does an option since removed."""
    cfg = methods.method_config("default-no-vat", 2, ARGS)
    elsewhere = dataclasses.replace(cfg, num_threads=1, device="auto", progress=True, eps=9.0)
    record = {"method": "default-no-vat", "draw": 2, "config": key(elsewhere)}
    assert methods.recorded([record], "default-no-vat", cfg)
    assert not methods.recorded([record], "default", cfg)  # another method's name
    assert not methods.recorded([dict(record, config={**record["config"], "lr": 1e-2})], "default-no-vat", cfg)
    lacking = {k: v for k, v in record["config"].items() if k != "term_weights"}
    assert not methods.recorded([dict(record, config=lacking)], "default-no-vat", cfg)
    assert not methods.recorded([dict(record, config={**record["config"], "cutout": 0})], "default-no-vat", cfg)
    with_vat = methods.method_config("default", 2, ARGS)
    other_eps = {"method": "default", "draw": 2, "config": key(dataclasses.replace(with_vat, eps=9.0))}
    assert not methods.recorded([other_eps], "default", with_vat)


def test_set_overrides_are_typed_like_the_fields_with_one_boolean_rule():
    assert methods.parse_set("eps=4,pool_first=True,max_shift=3,dataset=KMNIST") == dict(
        eps=4.0, pool_first=True, max_shift=3, dataset="KMNIST")
    for text, value in (("False", False), ("false", False), ("TRUE", True), ("true", True)):
        assert methods.parse_set(f"pool_first={text}") == dict(pool_first=value)
    for bad, message in (("pool_first=yes", "pool_first takes True or False"),
                         ("pool_first=1", "pool_first takes True or False"),
                         ("strong_stroke=0.5", "'strong_stroke' is not a TrainConfig field; allowed: dataset, "),
                         ("epsilon=2", "'epsilon' is not a TrainConfig field"),
                         ("steps=3.5", "steps takes an integer"), ("eps=big", "eps takes a number"),
                         ("eps", "expected field=value"), ("term_weights=mi", "term_weights \\(dict\\) cannot")):
        with pytest.raises(ValueError, match=message):
            methods.parse_set(bad)


def test_there_is_one_parse_set_and_the_command_lines_use_it(capsys):
    defining = [p.relative_to(REPO) for p in (REPO / "benchmarks").rglob("*.py") if "def parse_set" in p.read_text()]
    assert [str(p) for p in defining] == ["benchmarks/methods.py"]
    spec = importlib.util.spec_from_file_location("vat_drift", REPO / "benchmarks" / "experiments" / "vat_drift.py")
    vat_drift = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vat_drift)
    assert vat_drift.parse_set is methods.parse_set
    with pytest.raises(SystemExit):
        cli.main(["accuracy", "--set", "pool_first=yes", "--table-only"])
    assert "pool_first takes True or False" in capsys.readouterr().err


def test_screen_skips_a_variant_recorded_with_the_same_recipe_only(monkeypatch, tmp_path, capsys):
    cfg = vatlib.TrainConfig(steps=3000, data_seed=1, seed=1, report_test=False, progress=False, eps=2.0,
                             out=str(tmp_path / "runs" / "eps2-draw1"))
    recorded = dict(key(cfg), num_threads=1)  # the same run with another thread count
    results = tmp_path / "screen.json"
    vatlib.write_json(results, [{"name": "eps2", "draw": 1, "overrides": {"eps": 2.0}, "config": recorded,
                                 "best": {"step": 1750, "val_acc": 0.966}, "final": {"step": 3000, "val_acc": 0.954},
                                 "train_s": 843.8}])
    monkeypatch.setattr(vatlib, "train", lambda *a, **k: pytest.fail("trained a variant already recorded"))
    args = ['{"eps2": {"eps": 2.0}}', "--draws", "1-1", "--steps", "3000", "--results", str(results),
            "--runs", str(tmp_path / "runs")]
    screen.main(args)
    assert f"eps2 draw 1: already in {results}" in capsys.readouterr().out
    with pytest.raises(pytest.fail.Exception, match="trained a variant already recorded"):  # another config: trained
        screen.main(['{"eps2": {"eps": 2.0, "max_shift": 1}}', *args[1:]])
    for config in ({k: v for k, v in recorded.items() if k != "term_weights"},  # a field the record lacks
                   recorded | {"cutout": 10}):  # an option since removed, on
        vatlib.write_json(results, [{"name": "eps2", "draw": 1, "config": config}])
        with pytest.raises(pytest.fail.Exception, match="trained a variant already recorded"):
            screen.main(args)


def test_screen_table_shows_validation_only():
    table = screen.screen_table([{"name": "cutout10", "draw": 1, "overrides": {"cutout": 10},
                                  "best": {"step": 1750, "val_acc": 0.966}, "final": {"step": 3000, "val_acc": 0.954},
                                  "train_s": 843.8}])
    assert table.splitlines()[2] == '| cutout10 | 1 | {"cutout": 10} | 96.6 (1750) | 95.4 | 844 |'
    assert "test" not in table


def test_table_only_names_an_unknown_method(tmp_path):
    argv = ["accuracy", "--table-only", "--methods", "vat;nosuch (eps=2.0)", "--results", str(tmp_path / "none.json")]
    with pytest.raises(SystemExit, match="unknown method 'nosuch'; allowed: supervised, .*vat, .*default,"):
        cli.main(argv)


def test_parse_draws_count_range_list_and_bad_input():
    assert cli.parse_draws("3") == [0, 1, 2]
    assert cli.parse_draws("8-9") == [8, 9]
    assert cli.parse_draws("2,5") == [2, 5]
    for bad in ("0", "x", "5-3", "-1,2"):
        with pytest.raises(Exception, match="--draws"):
            cli.parse_draws(bad)


@pytest.mark.slow
def test_append_keeps_records_other_processes_wrote(tmp_path):
    """Two benchmark processes sharing a results file: each adds its record to the file as it is on disk."""
    import subprocess
    import sys

    from vatlib.records import append
    results = tmp_path / "accuracy.json"
    append(results, {"method": "a", "draw": 0})
    code = f"from vatlib.records import append; append({str(results)!r}, {{'method': 'b', 'draw': 1}})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)  # another process appends by itself
    records = append(results, {"method": "a", "draw": 2})
    assert [(r["method"], r["draw"]) for r in records] == [("a", 0), ("b", 1), ("a", 2)]


def test_plan_names_the_draws_recorded_and_to_train():
    """Before training, the benchmark says which of the draws asked for are already in the results file: a count
    (``--draws 3``, draws 0-2) taken for a draw number shows at once."""
    args = argparse.Namespace(**vars(ARGS), draws=cli.parse_draws("4"))
    records = [{"method": "vat", "draw": d, "config": key(methods.method_config("vat", d, args))} for d in (0, 1, 2)]
    records.append({"method": "vat", "draw": 3, "config": key(methods.method_config("vat", 3, args)) | {"eps": 9.0}})
    assert accuracy.plan(records, ["vat", "default"], args).splitlines() == [
        "vat: draws 0-3; already in r.json: 0-2; to train: 3",  # draw 3's record has another eps
        "default: draws 0-3; already in r.json: none; to train: 0-3"]
    assert tables.draw_list([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"


def test_a_record_of_an_earlier_config_is_named_by_the_recipe_fields_it_set_differently():
    """A preset that changed keeps its old records apart, each group named by the fields that differ today; where
    the run was carried out (here its threads) is no difference."""
    old = key(methods.method_config("vat", 2, ARGS)) | {"eps": 9.0, "num_threads": 1}
    assert report.changed({"method": "vat", "draw": 2, "config": old}, ARGS) == "eps=9.0"


def test_times_of_a_machine_whose_every_run_shared_the_cores_are_flagged():
    """Times are per machine: where every run on one machine shared the cores, its times are those runs', and the
    table says so for those draws, even when the row's runs on another machine had the cores to themselves."""
    records = [{"method": "vat", "draw": d, "best": {"test_acc": 0.99}, "final": {"test_acc": 0.99},
                "train_s": 100.0, "steps": 10, "steps_per_s": 0.1, "machine": MACHINE} for d in range(4)]
    for r in records[2:]:
        r.update(machine=dict(MACHINE, cpu="other"), note="two side by side")
    table = tables.accuracy_table(records, ["vat"])
    assert "| 100 / 100 |" in table
    assert "Every run of vat (draws 2, 3) shared the cores" in table


def test_every_committed_record_holds_every_trainconfig_field():
    """Whether a record is a run of a config is strict (nothing filled in), so a field added to TrainConfig needs
    the records migrated (tools/migrate_records.py): until then this fails, naming the field."""
    fields = {f.name for f in dataclasses.fields(vatlib.TrainConfig)} - {"out"}  # a record keeps all but out
    checked = 0
    for path in sorted((REPO / "benchmarks" / "results").glob("*.json")):
        for i, r in enumerate(load(path)):
            if "config" in r:
                missing = fields - set(r["config"])
                assert not missing, f"{path.name} record {i} lacks {sorted(missing)}: python tools/migrate_records.py"
                checked += 1
    assert checked > 250


def test_the_migration_fills_fields_drops_removed_options_that_were_off_and_renames(tmp_path, capsys):
    migration = _migration()
    full = key(vatlib.TrainConfig(final_blocks=1, steps=3000, eps=1.0))
    made_before = {k: v for k, v in full.items() if k not in ("pseudo_weight", "stroke_p", "final_blocks", "progress",
                                                              "lr_schedule")}
    records = [{"method": "default-0.3", "draw": 0, "config": made_before | {"cutout": 0, "members": 1}},
               {"method": "best (eps=2.0)", "draw": 1, "config": full | {"strong_stroke": 0.5}},
               {"method": "default", "draw": 2, "renamed_from": "default (eps=3.0)", "config": full},
               {"median_ms": {"VAT (textbook reference)": 80.0}, "repeats": 1}]
    vatlib.write_json(tmp_path / "accuracy.json", records)
    migration.main(["--results", str(tmp_path)])
    new = load(tmp_path / "accuracy.json")
    assert new[0]["config"] == full | {"pseudo_weight": 0.0, "stroke_p": 0.0, "final_blocks": 1, "progress": False}
    assert list(new[0]["config"]) == list(full)  # in TrainConfig's order
    assert (new[0]["method"], new[0]["renamed_from"]) == ("default-small", "default-0.3")
    assert new[1]["config"] == full | {"strong_stroke": 0.5}  # an option that was on: kept, it matches nothing today
    assert (new[1]["method"], new[1]["renamed_from"]) == ("small-long (eps=2.0)", "best (eps=2.0)")
    assert new[2] == records[2]
    assert new[3]["median_ms"] == {"VAT alone, the small model (textbook reference)": 80.0}
    assert "option since removed, on, kept: small-long (eps=2.0): strong_stroke=0.5" in capsys.readouterr().out
    migration.main(["--results", str(tmp_path), "--check"])  # idempotent: nothing left to do
    assert load(tmp_path / "accuracy.json") == new
    migration.main(["--check"])  # and the committed files are migrated


def test_presets_table_has_one_row_per_preset_and_says_what_is_not_measured():
    rows = [{"method": "default", "draw": d, "config": key(vatlib.draw_config(vatlib.preset_config("default"), d)),
             "best": {"test_acc": a}, "final": {"test_acc": a}} for d, a in ((0, 0.99), (1, 0.98))]
    rows.append(dict(rows[0], method="default (eps=1.0)", config=rows[0]["config"] | {"eps": 1.0}))  # another run
    steps = {"median_ms": {p: 100.0 for p in vatlib.PRESETS}, "steps": {p: 6000 for p in vatlib.PRESETS},
             "device": "cpu", "machine": dict(MACHINE, isa="AVX2")}
    table = report.presets_table(rows, [steps])
    lines = table.splitlines()
    assert [line.split(" | ")[0] for line in lines[2:2 + len(vatlib.PRESETS)]] == [f"| {p}" for p in vatlib.PRESETS]
    assert "| default | default | 0-1 | 98.50 ± 0.71 | 98.00 | 98.50 ± 0.71 | 10.0 |" in lines
    assert "| paper | not measured | – | – | – | – | 10.0 |" in lines
    assert "from the newest step record: cpu (AVX2), 2 threads, torch t, device cpu." in table
    earlier = {"median_ms": {"default": 100.0}, "device": "cpu", "machine": MACHINE}  # before steps were recorded
    assert "| default | default | 0-1 | 98.50 ± 0.71 | 98.00 | 98.50 ± 0.71 | not measured |" in report.presets_table(
        rows, [steps, earlier])


def test_step_times_every_preset_and_the_table_gives_minutes(monkeypatch, tmp_path):
    built = []

    class FakeRun:  # what the step benchmark builds, without the data and models
        def __init__(self, cfg, data, split, device):
            self.cfg, self.model = cfg, nn.Linear(1, 1)
            built.append(cfg)

        def train_step(self):
            pass

    monkeypatch.setattr(vatlib, "Run", FakeRun)
    monkeypatch.setattr(vatlib, "split_train", lambda *a: None)
    monkeypatch.setattr(vatlib, "load_dataset", lambda *a: argparse.Namespace(train_labels=None))
    monkeypatch.setattr(speed, "naive_step", lambda run: None)
    results = tmp_path / "step.json"
    cli.main(["step", "--repeats", "3", "--warmup", "1", "--results", str(results), "--device", "cpu"])
    record = load(results)[-1]
    assert list(record["median_ms"])[:len(vatlib.PRESETS)] == list(vatlib.PRESETS)
    assert {speed.NO_VAT, speed.VAT_ALONE, speed.TEXTBOOK} <= set(record["median_ms"])
    assert record["steps"] == {**{p: vatlib.preset_config(p).steps for p in vatlib.PRESETS},
                               speed.NO_VAT: 3500, speed.VAT_ALONE: 3500, speed.TEXTBOOK: 3500}
    assert [c for c in built[:len(vatlib.PRESETS)]] == [vatlib.preset_config(p, out="", progress=False, device="cpu")
                                                        for p in vatlib.PRESETS]
    assert all(c.data_seed == 0 and c.out == "" and not c.progress for c in built)
    table = speed.step_table(dict(record, median_ms={**record["median_ms"], "default": 120.0, "paper": 6.0}))
    assert "| step | ms | × default | steps | minutes (steps × step) |" in table
    assert "| default | 120.0 | 1.00 | 3500 | 7.0 |" in table and "| paper | 6.0 | 0.05 | 50000 | 5.0 |" in table


def test_loop_table_per_preset_and_for_a_record_made_before_presets():
    m = {"cpu": "cpu", "threads": "2"}
    record = {"baseline": "abc", "steps": 10, "eval_every": 5, "machine": m, "presets": {
        "default": {"same_history": True, "steps_per_s": {"before (abc)": [2.0], "after (this tree)": [3.0]}},
        "paper": {"same_history": False, "steps_per_s": {"before (abc)": [4.0, 4.0], "after (this tree)": [2.0, 2.0]}}}}
    table = speed.loop_table(record)
    assert "`python -m vatlib train --preset P --steps 10 --eval-every 5`" in table
    assert "| default | 1 | 2.00 | 3.00 | 1.50 | yes |" in table
    assert "| paper | 2 | 4.00 4.00 | 2.00 2.00 | 0.50 | no |" in table
    old = {"baseline": "abc", "steps": 600, "machine": m, "same_history": True,
           "steps_per_s": {"before (abc)": [6.0], "after (this tree)": [3.0]}}
    assert "| after (this tree) | 1 | 3.00 | 0.50 |" in speed.loop_table(old)
    with pytest.raises(SystemExit, match="--presets 'default,nosuch': allowed: default, "):
        cli.main(["loop", "--baseline", "HEAD", "--presets", "default,nosuch"])


def test_committed_results_md_is_what_the_results_files_generate():
    """benchmarks/RESULTS.md is generated, never edited: `python benchmarks/benchmark.py results` rewrites it."""
    assert (REPO / "benchmarks" / "RESULTS.md").read_text() == report.results_md()


def test_results_md_top_names_no_versions_and_no_dates():
    top = report.results_md().split("\n## Accuracy over labelled draws")[0]
    assert "## Presets: MNIST" in top
    assert not re.search(r"\b0\.[1-4]'s|-0\.[1-4]\b|\b(?:vatlib|version) \d|\bin 1\.0\b|\d{4}-\d{2}-\d{2}", top), top


def test_the_notebooks_ablation_is_the_results_md_rows():
    """The notebook shows ``ablation_md()``: its committed output holds the same rows, number for number, and so does
    RESULTS.md. (Re-execute the notebook when the ablation changes: python tools/run_notebook.py.)"""
    ablation = report.ablation_md()
    rows = [line for line in ablation.splitlines()
            if line.startswith("| ") and not line.startswith(("| method", "| A "))]  # the rows, not the headers
    assert [r.split(" | ")[0] for r in rows[:2]] == ["| supervised", "| vat"]
    assert "| default | default-no-vat |" in ablation
    committed = (REPO / "benchmarks" / "RESULTS.md").read_text()
    assert all(row in committed for row in rows), "a row differs from benchmarks/RESULTS.md"
    notebook = json.loads((REPO / "Projet_deep_learning.ipynb").read_text())
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code" and "ablation_md(" in "".join(c["source"])]
    assert len(cells) == 1, "the notebook has no cell (or several) that shows ablation_md()"
    shown = "".join("".join(o.get("data", {}).get("text/markdown", "")) + "".join(o.get("text", ""))
                    for o in cells[0].get("outputs", []))
    missing = [row.split(" | ")[0] for row in rows if row not in shown]
    assert not missing, f"the notebook's ablation output lacks or differs in the rows {missing}: re-execute it"


def test_paired_table_differences_by_draw_with_their_standard_error():
    rows = [{"method": m, "draw": d, "best": {"test_acc": a}} for m, accs in
            (("a", [0.990, 0.985, 0.980]), ("b", [0.985, 0.985, 0.970])) for d, a in enumerate(accs)]
    rows.append({"method": "a", "draw": 7, "best": {"test_acc": 0.5}})  # no partner: left out
    table = tables.paired_table(rows, [("a", "b")], None)
    # differences +0.5, 0, +1.0 points: mean 0.5, s.d. 0.5, s.e. 0.5 / sqrt(3) = 0.29
    assert table.splitlines()[2] == "| a | b | 0-2 | +0.50 +0.00 +1.00 | +0.50 ± 0.29 | 2/3 |"
    assert tables.paired_table(rows, [("a", "nosuch")], None) == ""


def test_paper_table_sets_the_final_step_error_beside_the_papers():
    rows = [{"method": "paper", "draw": d, "steps": 50_000, "best": {"test_acc": 0.99},
             "final": {"step": 50_000, "test_acc": acc}} for d, acc in ((0, 0.9700), (1, 0.9750))]
    table = tables.paper_table(rows + [dict(rows[0], method="vat")], None)
    assert "| paper | 0-1 | 3.00 2.50 | 2.75 ± 0.35 | 1.36 |" in table
    assert tables.paper_table(rows[:0], None) == ""


def test_accuracy_resumes_a_run_interrupted_in_its_folder_and_restarts_any_other(tmp_path, tiny_data, capsys):
    """A 50,000-step run (the paper preset) spans several benchmark invocations: the benchmark continues the
    interrupted run it finds in the method's folder, and starts again over a folder holding another run."""
    from helpers import tiny_config

    strip = lambda history: [{k: v for k, v in row.items() if k != "time_s"} for row in history]  # noqa: E731
    cfg = tiny_config(tmp_path, steps=60)
    full = vatlib.train(dataclasses.replace(cfg, out=str(tmp_path / "full")), data=tiny_data)

    def stop_at_40(run):
        if run.step == 40:
            run.request_stop()

    with pytest.raises(vatlib.TrainingInterrupted):
        vatlib.train(cfg, data=tiny_data, on_eval=stop_at_40)
    res, resumed_from = accuracy.train_or_resume(cfg, tiny_data)
    assert resumed_from == 40 and strip(res.history) == strip(full.history)

    other = dataclasses.replace(cfg, eps=cfg.eps * 2)  # the folder now holds a finished run of another config
    res, resumed_from = accuracy.train_or_resume(other, tiny_data)
    assert resumed_from is None and res.history[-1]["step"] == 60
    assert "not resuming" in capsys.readouterr().out


def test_the_readmes_results_table_is_the_presets_table_of_results_md():
    """The README quotes RESULTS.md's presets table, figure for figure (mean ± std, worst, draws, minutes)."""
    import re

    readme = (REPO / "README.md").read_text()
    results = (REPO / "benchmarks" / "RESULTS.md").read_text()
    presets = {}
    for line in results.split("## Presets: MNIST")[1].split("\n## ")[0].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and re.fullmatch(r"\d+-\d+", cells[2]):
            first, last = map(int, cells[2].split("-"))
            presets[cells[0]] = (cells[3], cells[4], str(last - first + 1), cells[6])
    rows = [line for line in readme.splitlines() if line.startswith("| ") and "`" in line.split("|")[1]
            and "--preset" not in line]
    assert len(rows) == len(presets) == 6
    for row in rows:
        cells = [c.strip().strip("*").replace(" %", "") for c in row.strip("|").split("|")]
        name = re.search(r"`([a-z-]+)`", cells[0]).group(1)
        assert tuple(cells[1:]) == presets[name], name
