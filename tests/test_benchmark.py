"""The benchmarks and screens: tables, records, resuming, and the committed RESULTS.md being what they generate."""

import pytest
import torch
from torch import nn

import benchmarks.benchmark as bench_module
import benchmarks.screen as screen_module
from helpers import REPO
from vatlib import vat_loss


def _benchmark_module():
    return bench_module


def test_naive_reference_matches_vat_loss():
    bench = _benchmark_module()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).double()
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    torch.manual_seed(1)
    naive = bench.naive_vat_loss(model, x, eps=1.0, xi=1e-6)
    assert all(p.grad is None for p in model.parameters())  # it cleaned up after its full backward
    torch.manual_seed(1)
    ours = vat_loss(model, x, eps=1.0, xi=1e-6)
    assert torch.allclose(naive, ours, rtol=1e-9), (naive, ours)


def test_accuracy_table_formats_mean_std_and_worst():
    bench = _benchmark_module()
    machine = {"cpu": "cpu", "cores": "2", "threads": "2", "torch": "t", "torchvision": "v"}
    records = [{"method": "vat", "draw": d, "best": {"test_acc": a}, "final": {"test_acc": a - 0.01},
                "train_s": 100.0, "steps": 10, "steps_per_s": 0.1, "machine": machine}
               for d, a in enumerate([0.98, 0.99, 1.0])]
    table = bench.accuracy_table(records, ["vat"])
    assert "| vat | 3 | 98.00 99.00 100.00 | 99.00 ± 1.00 | 98.00 | 98.00 ± 1.00 | 100 | 10 | 0.1 | 2 |" in table
    assert table.endswith("\ncpu, 2 cores; torch t, torchvision v; draw k uses data_seed=k and seed=k.")
    other = [dict(r, method="default", machine=dict(machine, cpu="other")) for r in records]
    table = bench.accuracy_table(records + other, ["vat", "default"])  # rows from two machines: each is named
    assert table.endswith("\nvat: cpu, 2 cores; torch t, torchvision v; default: other, 2 cores; torch t, "
                          "torchvision v. Draw k uses data_seed=k and seed=k.")

    newer = [dict(r, method="default", machine=dict(machine, isa="AVX-512")) for r in records]  # same name, newer CPU
    table = bench.accuracy_table(records + newer, ["vat", "default"])
    assert table.endswith("\nvat: cpu, 2 cores; torch t, torchvision v; default: cpu (AVX-512), 2 cores; torch t, "
                          "torchvision v. Draw k uses data_seed=k and seed=k.")

    later = [dict(r, draw=r["draw"] + 3, train_s=300.0, steps_per_s=0.2, machine=dict(machine, cpu="other"))
             for r in records]
    table = bench.accuracy_table(records + later, ["vat"])  # one method, draws 0-2 here and 3-5 there
    assert "| 6 | 98.00 99.00 100.00 98.00 99.00 100.00 |" in table
    assert "| 100 / 300 | 10 | 0.1 / 0.2 | 2 |" in table  # times never averaged across machines
    assert "vat (draws 0–2): cpu, 2 cores" in table and "vat (draws 3–5): other, 2 cores" in table


def test_time_to_accuracy_is_the_first_evaluation_at_or_above_the_threshold():
    bench = _benchmark_module()
    history = [{"time_s": 10.0, "test_acc": 0.97}, {"time_s": 20.0, "test_acc": 0.985},
               {"time_s": 30.0, "test_acc": 0.979}, {"time_s": 40.0, "test_acc": 0.991}]
    assert [bench.time_to_accuracy(history, t) for t in (0.98, 0.985, 0.99, 0.995)] == [20.0, 20.0, 40.0, None]
    records = [{"method": "m", "draw": d, "history": h} for d, h in enumerate([history, history[:3]])]
    table = bench.time_to_accuracy_table(records, ["m"])
    assert "| m | 2 | 20 (2/2) | 20 (2/2) | 40 (1/2) |" in table, table
    shared = [dict(records[0], draw=2, history=[dict(row, time_s=5 * row["time_s"]) for row in history], note="shared")]
    table = bench.time_to_accuracy_table(records + shared, ["m"])  # a run that shared the cores is not timed
    assert "| m | 2 | 20 (2/2) | 20 (2/2) | 40 (1/2) |" in table, table


def test_times_come_from_the_runs_that_had_the_cores_to_themselves():
    bench = _benchmark_module()
    machine = {"cpu": "cpu", "cores": "2", "threads": "2", "torch": "t", "torchvision": "v"}
    records = [{"method": "vat", "draw": d, "best": {"test_acc": 0.99}, "final": {"test_acc": 0.99},
                "train_s": 100.0, "steps": 10, "steps_per_s": 0.1, "machine": machine} for d in range(3)]
    records[2].update(train_s=900.0, steps_per_s=0.01, machine=dict(machine, threads="1"), note="beside another run")
    table = bench.accuracy_table(records, ["vat"])
    assert "| vat | 3 | 99.00 99.00 99.00 | 99.00 ± 0.00 | 99.00 | 99.00 ± 0.00 | 100 | 10 | 0.1 | 2 |" in table
    assert "left out, as they shared the cores (their records say with what): vat (draw 2)." in table
    assert "Every run" not in table
    for r in records:
        r["note"] = "all shared"  # then the times are all there is, and the table says they were shared
    table = bench.accuracy_table(records, ["vat"])
    assert "| 367 | 10 | 0.1 | 1/2 |" in table
    assert "Every run of vat shared the cores" in table
    for r in records:
        r["history"] = [{"step": 10, "time_s": 50.0, "test_acc": 0.99}]
    assert "Every run of vat shared the cores" in bench.time_to_accuracy_table(records, ["vat"])


def test_records_made_before_a_config_field_existed_still_match():
    import vatlib

    bench = _benchmark_module()
    cfg = vatlib.TrainConfig(eps=2.0)
    old = {k: v for k, v in bench._key(cfg).items() if k not in ("compile", "amp", "report_test")}
    assert bench.same_config(old, cfg)  # those fields at their defaults: what older runs did
    assert not bench.same_config(old, vatlib.TrainConfig(eps=2.0, amp=True))
    assert not bench.same_config({**old, "eps": 1.0}, cfg)


def test_a_field_the_run_never_read_does_not_tell_records_apart():
    """Without VAT, its radius is never read: a record of the default without VAT at eps 1 is the same run as
    that recipe at any other eps; with VAT it is not."""
    import vatlib

    bench = _benchmark_module()
    no_vat = bench._key(vatlib.TrainConfig(vat_weight=0.0, eps=1.0))
    assert bench.same_config(no_vat, vatlib.TrainConfig(vat_weight=0.0, eps=3.0, xi=1e-6))
    assert not bench.same_config(no_vat, vatlib.TrainConfig(vat_weight=0.0, eps=3.0, lr=1e-2))
    assert not bench.same_config(bench._key(vatlib.TrainConfig(eps=1.0)), vatlib.TrainConfig(eps=3.0))


def test_set_overrides_are_typed_like_the_fields():
    import pytest
    bench = _benchmark_module()
    assert bench.parse_set("eps=4,pool_first=True,max_shift=3,dataset=KMNIST") == dict(
        eps=4.0, pool_first=True, max_shift=3, dataset="KMNIST")
    assert bench.parse_set("pool_first=False") == dict(pool_first=False)
    with pytest.raises(SystemExit, match="pool_first takes True or False"):
        bench.parse_set("pool_first=yes")
    with pytest.raises(SystemExit, match="'strong_stroke' is not a TrainConfig field"):  # removed in 1.0
        bench.parse_set("strong_stroke=0.5")
    with pytest.raises(SystemExit, match="'epsilon' is not a TrainConfig field"):
        bench.parse_set("epsilon=2")


def _screen_module():
    return screen_module


def test_screen_skips_a_variant_recorded_before_later_fields_existed(monkeypatch, tmp_path, capsys):
    import vatlib
    from vatlib.records import key
    screen = _screen_module()
    cfg = vatlib.TrainConfig(steps=3000, data_seed=1, seed=1, report_test=False, progress=False, eps=2.0,
                             out=str(tmp_path / "runs" / "eps2-draw1"))
    # Recorded by 0.4: no term_weights yet, and the options 1.0 removed, at their off values.
    old = {k: v for k, v in key(cfg).items() if k != "term_weights"} | {"cutout": 0, "members": 1, "elastic": 0.0}
    results = tmp_path / "screen.json"
    vatlib.write_json(results, [{"name": "eps2", "draw": 1, "overrides": {"eps": 2.0}, "config": old,
                                 "best": {"step": 1750, "val_acc": 0.966}, "final": {"step": 3000, "val_acc": 0.954},
                                 "train_s": 843.8}])
    monkeypatch.setattr(vatlib, "train", lambda *a, **k: pytest.fail("trained a variant already recorded"))
    args = ['{"eps2": {"eps": 2.0}}', "--draws", "1-1", "--results", str(results), "--runs", str(tmp_path / "runs")]
    screen.main(args)
    assert f"eps2 draw 1: already in {results}" in capsys.readouterr().out
    with pytest.raises(pytest.fail.Exception, match="trained a variant already recorded"):  # another config: trained
        screen.main(['{"eps2": {"eps": 2.0, "max_shift": 1}}', *args[1:]])
    # A record made with a removed option on is another run: it matches nothing today.
    vatlib.write_json(results, [{"name": "eps2", "draw": 1, "config": old | {"cutout": 10}}])
    with pytest.raises(pytest.fail.Exception, match="trained a variant already recorded"):
        screen.main(args)


def test_screen_table_shows_validation_only():
    screen = _screen_module()
    table = screen.screen_table([{"name": "cutout10", "draw": 1, "overrides": {"cutout": 10},
                                  "best": {"step": 1750, "val_acc": 0.966}, "final": {"step": 3000, "val_acc": 0.954},
                                  "train_s": 843.8}])
    assert table.splitlines()[2] == '| cutout10 | 1 | {"cutout": 10} | 96.6 (1750) | 95.4 | 844 |'
    assert "test" not in table


def test_table_only_names_an_unknown_method(monkeypatch, tmp_path):
    bench = _benchmark_module()
    argv = ["accuracy", "--table-only", "--methods", "vat;nosuch (eps=2.0)", "--results", str(tmp_path / "none.json")]
    with pytest.raises(SystemExit, match="unknown method 'nosuch'; allowed: supervised, vat"):
        bench.main(argv)


def test_parse_draws_count_range_list_and_bad_input():
    bench = _benchmark_module()
    assert bench.parse_draws("3") == [0, 1, 2]
    assert bench.parse_draws("8-9") == [8, 9]
    assert bench.parse_draws("2,5") == [2, 5]
    for bad in ("0", "x", "5-3", "-1,2"):
        with pytest.raises(Exception, match="--draws"):
            bench.parse_draws(bad)


@pytest.mark.slow
def test_append_keeps_records_other_processes_wrote(tmp_path):
    """Two benchmark processes sharing a results file: each adds its record to the file as it is on disk."""
    bench = _benchmark_module()
    results = tmp_path / "accuracy.json"
    bench._append(results, {"method": "a", "draw": 0})
    # another process appends by itself ...
    import subprocess
    import sys
    code = f"from vatlib.records import append; append({str(results)!r}, {{'method': 'b', 'draw': 1}})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    records = bench._append(results, {"method": "a", "draw": 2})
    assert [(r["method"], r["draw"]) for r in records] == [("a", 0), ("b", 1), ("a", 2)]


def test_plan_names_the_draws_recorded_and_to_train():
    """Before training, the benchmark says which of the draws asked for are already in the results file: a count
    (``--draws 3``, draws 0-2) taken for a draw number shows at once."""
    import argparse

    bench = _benchmark_module()
    args = argparse.Namespace(dataset="MNIST", data_root="data", device="cpu", runs="runs/bench",
                              results="r.json", draws=bench.parse_draws("4"))
    records = [{"method": "vat", "draw": d, "config": bench._key(bench.method_config("vat", d, args))} for d in (0, 1, 2)]
    records.append({"method": "vat", "draw": 3, "config": bench._key(bench.method_config("vat", 3, args)) | {"eps": 9.0}})
    assert bench.plan(records, ["vat", "default"], args).splitlines() == [
        "vat: draws 0-3; already in r.json: 0-2; to train: 3",  # draw 3's record has another eps
        "default: draws 0-3; already in r.json: none; to train: 0-3"]
    assert bench._draw_list([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"


def test_a_record_of_an_earlier_config_is_named_by_what_it_set_differently():
    """A preset that changed keeps its old records apart, each group named by the fields that differ today."""
    import argparse

    bench = _benchmark_module()
    args = argparse.Namespace(dataset="MNIST", data_root="data", device="cpu", runs="runs/bench")
    old = bench._key(bench.method_config("vat", 2, args)) | {"eps": 9.0, "num_threads": 1}
    assert bench._changed({"method": "vat", "draw": 2, "config": old}, args) == "eps=9.0, num_threads=1"


def test_times_of_a_machine_whose_every_run_shared_the_cores_are_flagged():
    """Times are per machine: where every run on one machine shared the cores, its times are those runs', and the
    table says so for those draws, even when the row's runs on another machine had the cores to themselves."""
    bench = _benchmark_module()
    machine = {"cpu": "cpu", "cores": "2", "threads": "2", "torch": "t", "torchvision": "v"}
    records = [{"method": "vat", "draw": d, "best": {"test_acc": 0.99}, "final": {"test_acc": 0.99},
                "train_s": 100.0, "steps": 10, "steps_per_s": 0.1, "machine": machine} for d in range(4)]
    for r in records[2:]:
        r.update(machine=dict(machine, cpu="other"), note="two side by side")
    table = bench.accuracy_table(records, ["vat"])
    assert "| 100 / 100 |" in table
    assert "Every run of vat (draws 2, 3) shared the cores" in table


def test_committed_results_md_is_what_the_results_files_generate():
    """benchmarks/RESULTS.md is generated, never edited: `python benchmarks/benchmark.py results` rewrites it."""
    assert (REPO / "benchmarks" / "RESULTS.md").read_text() == bench_module.results_md()


def test_the_notebooks_ablation_is_the_results_md_rows():
    """The notebook shows ``ablation_md()``: the same rows, number for number, as RESULTS.md."""
    committed = (REPO / "benchmarks" / "RESULTS.md").read_text()
    ablation = bench_module.ablation_md()
    rows = [line for line in ablation.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [r.split(" | ")[0] for r in rows[:2]] == ["| supervised", "| vat"]
    assert all(row in committed for row in rows), "a row differs from benchmarks/RESULTS.md"
    assert "| default | default-no-vat |" in ablation


def test_paired_table_differences_by_draw_with_their_standard_error():
    bench = _benchmark_module()
    rows = [{"method": m, "draw": d, "best": {"test_acc": a}} for m, accs in
            (("a", [0.990, 0.985, 0.980]), ("b", [0.985, 0.985, 0.970])) for d, a in enumerate(accs)]
    rows.append({"method": "a", "draw": 7, "best": {"test_acc": 0.5}})  # no partner: left out
    table = bench.paired_table(rows, [("a", "b")], None)
    # differences +0.5, 0, +1.0 points: mean 0.5, s.d. 0.5, s.e. 0.5 / sqrt(3) = 0.29
    assert table.splitlines()[2] == "| a | b | 0-2 | +0.50 +0.00 +1.00 | +0.50 ± 0.29 | 2/3 |"
    assert bench.paired_table(rows, [("a", "nosuch")], None) == ""


def test_paper_table_sets_the_final_step_error_beside_the_papers():
    bench = _benchmark_module()
    rows = [{"method": "paper", "draw": d, "steps": 50_000, "best": {"test_acc": 0.99},
             "final": {"step": 50_000, "test_acc": acc}} for d, acc in ((0, 0.9700), (1, 0.9750))]
    table = bench.paper_table(rows + [dict(rows[0], method="vat")], None)
    assert "| paper | 0-1 | 3.00 2.50 | 2.75 ± 0.35 | 1.36 |" in table
    assert bench.paper_table(rows[:0], None) == ""


def test_accuracy_resumes_a_run_interrupted_in_its_folder_and_restarts_any_other(tmp_path, tiny_data, capsys):
    """A 50,000-step run (the paper preset) spans several benchmark invocations: the benchmark continues the
    interrupted run it finds in the method's folder, and starts again over a folder holding another run."""
    import dataclasses

    import vatlib
    from helpers import tiny_config

    strip = lambda history: [{k: v for k, v in row.items() if k != "time_s"} for row in history]  # noqa: E731
    cfg = tiny_config(tmp_path, steps=60)
    full = vatlib.train(dataclasses.replace(cfg, out=str(tmp_path / "full")), data=tiny_data)

    def stop_at_40(run):
        if run.step == 40:
            run.request_stop()

    with pytest.raises(vatlib.TrainingInterrupted):
        vatlib.train(cfg, data=tiny_data, on_eval=stop_at_40)
    res, resumed_from = bench_module._train_or_resume(cfg, tiny_data)
    assert resumed_from == 40 and strip(res.history) == strip(full.history)

    other = dataclasses.replace(cfg, eps=cfg.eps * 2)  # the folder now holds a finished run of another config
    res, resumed_from = bench_module._train_or_resume(other, tiny_data)
    assert resumed_from is None and res.history[-1]["step"] == 60
    assert "not resuming" in capsys.readouterr().out
