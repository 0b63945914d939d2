"""Choosing eps (or any setting) on the validation split: the tune API and command."""

import json
import math

import pytest

from helpers import REPO, tiny_config
from vatlib import tune, tune_table
from vatlib.__main__ import main


@pytest.mark.slow
def test_tune_scores_every_combination_on_validation_only_and_resumes(tmp_path, tiny_data):
    base = tiny_config(tmp_path, steps=20, eval_every=10)
    logged = []
    records = tune(base, {"eps": [0.5, 2.0], "entmin_weight": [0.0, 0.5]}, draws=[0, 1], out=str(tmp_path / "t"),
                   data=tiny_data, log=logged.append)
    assert len(logged) == 8 and len(records) == 4
    assert [r["val_acc"] for r in records] == sorted((r["val_acc"] for r in records), reverse=True)
    assert all(len(r["val_accs"]) == 2 and math.isclose(r["val_acc"], sum(r["val_accs"]) / 2) for r in records)
    # The test set is never evaluated by a tune run.
    history = json.loads((tmp_path / "t" / "eps0.5-entmin_weight0.0-draw1" / "history.json").read_text())
    assert all(math.isnan(row["test_acc"]) for row in history)
    # Run again: everything comes from tune.json, nothing is trained.
    again = tune(base, {"eps": [0.5, 2.0], "entmin_weight": [0.0, 0.5]}, draws=[0, 1], out=str(tmp_path / "t"),
                 data=tiny_data, log=logged.append)
    assert len(logged) == 8 and again == records
    table = tune_table(records)
    assert table.splitlines()[0].startswith("| eps | entmin_weight | validation acc., mean % |") and "test" not in table


def test_tune_refuses_a_bad_grid_before_training(tmp_path, tiny_data):
    with pytest.raises(ValueError, match=r"TrainConfig.eps=-1.0 is invalid"):
        tune(tiny_config(tmp_path), {"eps": [1.0, -1.0]}, out=str(tmp_path / "t"), data=tiny_data)
    with pytest.raises(ValueError, match=r"grid fields \['epsilon'\] are invalid"):
        tune(tiny_config(tmp_path), {"epsilon": [1.0]}, out=str(tmp_path / "t"), data=tiny_data)
    assert not (tmp_path / "t").exists()


def test_tune_command_prints_the_table_and_the_winning_command(tmp_path, capsys):
    out = tmp_path / "tune"
    code = main(["tune", "--eps", "0.5,3", "--steps", "10", "--eval-every", "5", "--width", "4", "--batch-unlabelled",
                 "16", "--num-threads", "1", "--no-channels-last", "--data-root", str(REPO / "data"), "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "| eps | validation acc., mean % |" in text and (out / "tune.md").exists()
    winner = json.loads((out / "tune.json").read_text())
    best = max(winner, key=lambda r: r["val_acc"])["params"]["eps"]  # the earlier one of equal scores
    command = text.rstrip().splitlines()[-1]
    assert command == (f"train it with the full recipe:  python -m vatlib train --width 4 --batch-unlabelled 16 "
                       f"--num-threads 1 --no-channels-last --data-root {REPO / 'data'} --eps {best}")
    assert main(["tune", "--eps", "1"]) == 2 and "nothing to tune" in capsys.readouterr().err


def test_tune_draws_mean_what_they_mean_in_the_benchmark(monkeypatch, capsys):
    import vatlib.__main__ as cli

    seen = []
    monkeypatch.setattr(cli, "tune", lambda base, grid, draws, out: seen.append(draws) or (_ for _ in ()).throw(
        KeyboardInterrupt))
    for text, draws in (("5", [0, 1, 2, 3, 4]), ("3-4", [3, 4]), ("2,7", [2, 7])):
        assert main(["tune", "--eps", "1,2", "--draws", text]) == 130
        assert seen[-1] == draws
    with pytest.raises(SystemExit):
        main(["tune", "--eps", "1,2", "--draws", "0"])
    assert "a count N (draws 0..N-1)" in capsys.readouterr().err
