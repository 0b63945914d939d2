"""End-to-end training on tiny synthetic data, config validation, and the command line."""

import json
import math
import subprocess
import sys

import pytest
import torch

from helpers import REPO, tiny_config
import vatlib
from vatlib import TrainConfig, evaluate, load_checkpoint, load_model, train
from vatlib.__main__ import main


def test_vat_training_beats_chance_and_writes_best_checkpoint(tmp_path, tiny_data):
    cfg = tiny_config(tmp_path)
    result = train(cfg, data=tiny_data)
    assert [h["step"] for h in result.history] == [20, 40, 60, 80, 100]
    assert result.final["test_acc"] > 0.7, result.history  # chance is 0.1
    assert all(h["loss_vat"] > 0 for h in result.history)
    # The kept checkpoint is the best on validation, and reloads to the same test accuracy.
    best_val = max(h["val_acc"] for h in result.history)
    assert result.best["val_acc"] == best_val
    ck = load_checkpoint(result.checkpoint)
    assert ck["step"] == result.best["step"] and ck["val_acc"] == best_val
    assert ck["config"]["dataset"] == "KMNIST" and len(ck["labelled_indices"]) == 30
    model = load_model(result.checkpoint)
    assert evaluate(model, tiny_data.test_images, tiny_data.test_labels) == pytest.approx(ck["test_acc"])
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == result.history
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == cfg.to_dict()


@pytest.mark.slow
def test_the_pool_first_model_trains_and_its_checkpoint_reloads_it(tmp_path, tiny_data):
    result = train(tiny_config(tmp_path, pool_first=True), data=tiny_data)
    assert result.final["test_acc"] > 0.7, result.history  # chance is 0.1
    ck = load_checkpoint(result.checkpoint)
    assert ck["model"]["pool_first"] is True and ck["config"]["pool_first"] is True
    model = load_model(result.checkpoint)
    assert model.pool_first
    assert evaluate(model, tiny_data.test_images, tiny_data.test_labels) == pytest.approx(ck["test_acc"])


def test_supervised_only_mode_trains_on_the_labelled_images_alone(tmp_path, tiny_data):
    result = train(tiny_config(tmp_path, vat_weight=0.0), data=tiny_data)
    assert all(h["loss_vat"] == 0 for h in result.history)  # the toy config's one unlabelled term, turned off
    assert result.final["test_acc"] > 0.5


def test_entropy_minimisation_and_balance_terms_are_trained(tmp_path, tiny_data):
    result = train(tiny_config(tmp_path, steps=40, entmin_weight=0.5, balance_weight=0.5, rampup_steps=20),
                   data=tiny_data)
    assert all(h["loss_ent"] > 0 and h["loss_bal"] > 0 for h in result.history)
    assert result.history[-1]["loss_ent"] < result.history[0]["loss_ent"]


def test_same_seeds_same_run_and_data_seed_moves_the_split(tmp_path, tiny_data):
    a = train(tiny_config(tmp_path, steps=20, out=""), data=tiny_data)
    b = train(tiny_config(tmp_path, steps=20, out=""), data=tiny_data)
    assert a.history == [dict(h, time_s=a.history[i]["time_s"]) for i, h in enumerate(b.history)]
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert a.checkpoint is None  # out="" writes nothing
    c = train(tiny_config(tmp_path, steps=20, data_seed=1, out=str(tmp_path / "c")), data=tiny_data)
    d = train(tiny_config(tmp_path, steps=20, data_seed=2, out=str(tmp_path / "d")), data=tiny_data)
    assert not torch.equal(load_checkpoint(c.checkpoint)["labelled_indices"],
                           load_checkpoint(d.checkpoint)["labelled_indices"])


@pytest.mark.parametrize("field, value, allowed", [
    ("eps", 0.0, "> 0"), ("xi", -1e-3, "> 0"), ("n_power", 0, "integer >= 1"), ("steps", 0, "integer >= 1"),
    ("dataset", "CIFAR10", "one of"), ("device", "tpu", "allowed"), ("ema_decay", 1.0, "ema_decay < 1"),
    ("vat_weight", -1.0, ">= 0"), ("max_shift", 20, "0..13"), ("stroke_p", 1.5, "0 <= stroke_p <= 1"),
    ("final_blocks", 0, "integer >= 1"), ("pseudo_flex", 1, "True or False"),
    ("term_weights", {"mi": -1.0}, "finite weight >= 0"),
])
def test_invalid_config_names_field_value_and_range(field, value, allowed):
    with pytest.raises(ValueError) as e:
        TrainConfig(**{field: value}).validate()
    msg = str(e.value)
    assert field in msg and repr(value) in msg and allowed in msg, msg


def test_cuda_device_unavailable_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="not available"):
        TrainConfig(device="cuda").validate()


@pytest.mark.slow
def test_cli_train_then_evaluate_on_shipped_mnist(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["train", "--steps", "30", "--eval-every", "15", "--batch-unlabelled", "32", "--width", "8",
                 "--out", str(out), "--no-progress", "--data-root", str(REPO / "data")])
    assert code == 0
    text = capsys.readouterr().out
    assert "test accuracy:" in text and "best on validation: step" in text
    ck = load_checkpoint(out / "best.pth")
    assert ck["config"]["steps"] == 30 and ck["config"]["width"] == 8
    code = main(["evaluate", str(out / "best.pth"), "--data-root", str(REPO / "data")])
    assert code == 0
    text = capsys.readouterr().out
    assert f"test accuracy: {ck['test_acc']:.2%}" in text  # recomputed equals recorded
    assert text.count("%") >= 12  # overall + recorded + ten classes


def test_cli_preset_then_explicit_flags_override(monkeypatch):
    import vatlib.__main__ as cli
    from vatlib import PRESETS

    seen = []
    monkeypatch.setattr(cli, "train", lambda cfg, **kw: seen.append(cfg) or (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["train", "--preset", "small-long", "--eps", "0.5", "--no-progress"]) == 130
    assert seen[0].steps == PRESETS["small-long"]["steps"] and seen[0].eps == 0.5 and seen[0].out == "runs/small-long"
    assert main(["train", "--supervised-only", "--steps", "9"]) == 130
    assert (seen[1].vat_weight, seen[1].entmin_weight, seen[1].balance_weight) == (0.0, 0.0, 0.0)
    assert (seen[1].steps, seen[1].out) == (9, "runs/supervised")
    assert seen[1] == vatlib.preset_config("supervised", steps=9, out="runs/supervised", progress=seen[1].progress)
    assert main(["train", "--preset", "supervised", "--steps", "9"]) == 130
    assert seen[2] == seen[1]  # --supervised-only is --preset supervised
    assert main(["train", "--preset", "vat", "--steps", "9"]) == 130
    assert (seen[3].pseudo_weight, seen[3].stroke_p, seen[3].vat_weight, seen[3].out) == (0.0, 0.0, 1.0, "runs/vat")
    assert main(["train", "--supervised-only", "--preset", "small-long"]) == 2
    with pytest.raises(SystemExit):
        main(["train", "--preset", "nope"])


def test_every_config_field_has_a_reason_shown_in_cli_help(capsys):
    import dataclasses

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    for f in dataclasses.fields(TrainConfig):
        reason = f.metadata.get("help", "")
        assert len(reason) > 10, f.name
        assert f"--{f.name.replace('_', '-')}" in shown and " ".join(reason.split()).replace("%", "%%")[:40] in shown


@pytest.mark.slow
def test_cli_reports_bad_input_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vatlib", "train", "--eps", "-1", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "TrainConfig.eps=-1.0 is invalid" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "vatlib", "evaluate", str(tmp_path / "missing.pth")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "no such checkpoint file" in proc.stderr


def test_callbacks_see_every_step_and_evaluation_and_can_stop_the_run(tmp_path, tiny_data):
    steps, rows = [], []

    def on_eval(run):
        rows.append(dict(run.history[-1]))
        assert (tmp_path / "run" / "last.pth").exists()  # saved before the callback runs
        if run.step == 40:
            run.request_stop()

    with pytest.raises(vatlib.TrainingInterrupted, match="interrupted at step 40 of 100"):
        train(tiny_config(tmp_path), data=tiny_data, on_step=lambda run: steps.append(run.step), on_eval=on_eval)
    assert steps == list(range(1, 41)) and [r["step"] for r in rows] == [20, 40]
    assert set(rows[0]) == {"step", "time_s", "lr", "val_acc", "test_acc", "loss_sup", *(f"loss_{n}" for n in vatlib.LOSS_TERMS)}
    resumed = train(tiny_config(tmp_path), data=tiny_data, resume=True, on_start=lambda run: steps.append(("start", run.step)))
    assert steps[-1] == ("start", 40) and resumed.history[:2] == rows


def test_compile_falls_back_to_eager_with_one_warning(tmp_path, tiny_data, monkeypatch):
    """No working compiler (torch.compile fails at its first call): one warning, then the eager run."""
    def compile_without_compiler(fn, **kwargs):
        def fail(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found in torch._inductor.config.cpp.cxx")
        return fail

    eager = train(tiny_config(tmp_path, steps=10, eval_every=5, out=""), data=tiny_data)
    monkeypatch.setattr(torch, "compile", compile_without_compiler)
    with pytest.warns(RuntimeWarning, match="compile=True but torch.compile does not work here "
                                            r"\(RuntimeError: InvalidCxxCompiler.*training in eager mode") as seen:
        fallback = train(tiny_config(tmp_path, steps=10, eval_every=5, out="", compile=True), data=tiny_data)
    assert len([w for w in seen if issubclass(w.category, RuntimeWarning)]) == 1
    assert [{k: v for k, v in r.items() if k != "time_s"} for r in fallback.history] == \
           [{k: v for k, v in r.items() if k != "time_s"} for r in eager.history]


def test_mixed_precision_run_trains(tmp_path, tiny_data):
    result = train(tiny_config(tmp_path, steps=60, amp=True, out=""), data=tiny_data)
    assert result.final["test_acc"] > 0.5 and all(h["loss_vat"] > 0 for h in result.history)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_training_steps_never_wait_for_the_device(tmp_path, tiny_data, amp):
    from vatlib import Run, split_train

    # Every term and augmentation of the default recipe and of VAT with entropy minimisation, so that none of them may hide a sync.
    cfg = tiny_config(tmp_path, device="cuda", out="", amp=amp, entmin_weight=1.0, max_rotate=10.0, pseudo_weight=1.0,
                      pseudo_flex=True, stroke_p=0.5, balance_weight=0.5)
    run = Run(cfg, tiny_data, split_train(tiny_data.train_labels, 3, 60, 0), torch.device("cuda"))
    run.model.train()
    run.train_step()  # first step: lazy initialisation (cuDNN, optimiser state) may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            run.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert run.step == 4 and int(run.finite.first_bad_step) == 0


@cuda
def test_cuda_non_finite_loss_skips_the_update_and_stops_before_saving(tmp_path, tiny_data):
    def poison(run):
        if run.step == 46:
            run.model.head.bias.data.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match=r"step 47: loss is not finite; its update .* was skipped, and "
                                                 r"training stopped at step 60, before saving"):
        train(tiny_config(tmp_path, steps=100, device="cuda"), data=tiny_data, on_step=poison)
    assert load_checkpoint(tmp_path / "run" / "last.pth")["resume"]["step"] == 40


def test_training_on_arrays_of_ones_own_records_them(tmp_path, tiny_data, capsys):
    from vatlib import ImageData

    own = ImageData.from_arrays(tiny_data.train_images.numpy(), tiny_data.train_labels.numpy(),
                                tiny_data.test_images.numpy(), tiny_data.test_labels.numpy(), name="my-digits")
    # 80 steps: the default CNN (two blocks at 7x7) learns the toy data more slowly than the small model did in 40
    result = train(tiny_config(tmp_path, steps=80), data=own)
    assert result.final["test_acc"] > 0.5
    recorded = load_checkpoint(result.checkpoint)["data"]
    assert recorded == own.fingerprint() and recorded["name"] == "my-digits" and recorded["source"] == "arrays"
    # The command line cannot load such data, and says how to evaluate the model instead.
    assert main(["evaluate", str(result.checkpoint)]) == 2
    assert "trained on arrays given in Python (my-digits)" in capsys.readouterr().err
    # Resuming with other data is refused.
    other = own._replace(train_labels=(own.train_labels + 1) % 10)
    with pytest.raises(ValueError, match="the data differ from the saved run's"):
        train(tiny_config(tmp_path, steps=80), data=other, resume=True)


# ------------------------------------------------------------------ the recipe's terms and views

def _run(tmp_path, tiny_data, **kw):
    from vatlib import Run
    from vatlib.data import split_train
    cfg = tiny_config(tmp_path, **kw)
    return Run(cfg, tiny_data, split_train(tiny_data.train_labels, cfg.per_class, cfg.n_validation, cfg.data_seed),
               torch.device("cpu"))


def _grad_modes_of_passes(run):
    """torch.is_grad_enabled() at each forward pass of one training step, with the batch size."""
    seen = []
    handle = run.model.register_forward_hook(lambda m, args, out: seen.append((len(args[0]), torch.is_grad_enabled())))
    try:
        run.train_step()
    finally:
        handle.remove()
    return seen


def test_only_a_term_that_trains_through_the_clean_pass_gives_it_a_gradient(tmp_path, tiny_data):
    # Passes: labelled (16), clean unlabelled (32), power iteration, perturbed. VAT's target is the clean
    # prediction, held fixed: no gradient there, unless entropy minimisation trains through it.
    assert _grad_modes_of_passes(_run(tmp_path, tiny_data)) == [(16, True), (32, False), (32, True), (32, True)]
    ent = _run(tmp_path, tiny_data, entmin_weight=1.0)
    assert _grad_modes_of_passes(ent) == [(16, True), (32, True), (32, True), (32, True)]
    # The pseudo-labels' target is the clean prediction too; they train through a fifth pass, the strong view.
    pseudo = _run(tmp_path, tiny_data, pseudo_weight=1.0)
    assert _grad_modes_of_passes(pseudo) == [(16, True), (32, False), (32, True), (32, True), (32, True)]
    # The supervised preset makes the labelled pass only.
    supervised = _run(tmp_path, tiny_data, **vatlib.PRESETS["supervised"])
    assert supervised.terms == [] and _grad_modes_of_passes(supervised) == [(16, True)]


def _confident_logits(label, confident, n_classes=10):
    """Logits (N, C): a softmax of 0.99 on ``label`` where ``confident``, else nearly uniform (max 0.1 + a little)."""
    logits = torch.zeros(len(label), n_classes)
    logits[torch.arange(len(label)), label] = torch.where(confident, torch.tensor(7.0), torch.tensor(0.01))
    return logits


def test_pseudo_term_trains_the_strong_view_towards_confident_clean_predictions(tmp_path, tiny_data):
    import torch.nn.functional as F
    from vatlib.terms import TermContext, builtin_terms
    run = _run(tmp_path, tiny_data, pseudo_weight=1.0, pseudo_flex=False, pseudo_threshold=0.9)
    index = torch.arange(32)
    xu, _ = run.views(run.unlabelled[index])
    strong, _ = run.views(run.unlabelled[index], strong=True)
    label = torch.arange(len(index)) % 10
    confident = torch.arange(len(index)) % 3 == 0
    term = builtin_terms(run.cfg)["pseudo"]
    assert term.strong_view and not term.clean_grad and term.init_state(5, 10) == {}  # no memory without FlexMatch
    ctx = TermContext(run.model, xu, _confident_logits(label, confident), index, step=1, strong=strong)
    loss = term.fn(ctx)
    per_sample = F.cross_entropy(run.model(strong), label, reduction="none")
    assert torch.allclose(loss, (per_sample * confident).mean())  # only the confident third, at their own class
    assert loss.requires_grad
    # The strong view: rotated/zoomed (bilinear, so not the weak view's exact 1/255 steps).
    assert not torch.equal(strong, xu)
    assert ((strong * 255 - (strong * 255).round()).abs() > 1e-3).any()
    # Nothing is confident: the term is zero.
    ctx.logits = _confident_logits(label, torch.zeros(len(index), dtype=torch.bool))
    assert term.fn(ctx) == 0


def test_flexmatch_thresholds_are_low_for_classes_with_few_confident_predictions(tmp_path, tiny_data):
    from vatlib.terms import flexmatch_thresholds
    run = _run(tmp_path, tiny_data, pseudo_weight=1.0, pseudo_flex=True, pseudo_threshold=0.9)
    memory, classes = run.term_state["pseudo"]["memory"], torch.arange(10)  # the run's memory, one slot per image
    assert (memory == -1).all() and len(memory) == len(run.unlabelled) == 510

    def thresholds(conf):
        return flexmatch_thresholds(memory, classes, torch.full((10,), conf), classes, 0.9, 10)

    # Warm-up: nothing was confident yet, so every threshold is 0; the confident predictions are remembered.
    assert torch.equal(thresholds(0.95), torch.zeros(10))
    assert torch.equal(memory[:10], classes) and (memory[10:] == -1).all()
    # beta = a class's count over the largest count, the never-confident images' included.
    memory[:100], memory[100:150], memory[150:] = 0, 1, 2
    beta = torch.tensor([100, 50, 360] + [0] * 7) / 360
    found = thresholds(0.5)
    assert torch.allclose(found, 0.9 * beta / (2 - beta))
    assert found[2] == pytest.approx(0.9) and found[3] == 0  # the most confident class gets tau itself
    assert (memory[:10] == 0).all()  # 0.5 < 0.9: not confident, the memory keeps what it had
    memory[150:] = -1  # 360 never-confident images outnumber class 0's 100: still warming up
    found = thresholds(0.5)
    assert torch.allclose(found[:2], 0.9 * beta[:2] / (2 - beta[:2])) and (found[2:] == 0).all()
    run.train_step()  # the run's pseudo term writes to the same memory
    assert run.state_dict()["term_state"]["pseudo"]["memory"].tolist() == memory.tolist()


@pytest.mark.slow
def test_pseudo_labels_train_and_resume_exactly(tmp_path, tiny_data):
    # Ramped up: hard pseudo-labels from step 1 (FlexMatch's warm-up uses every one) collapse a toy run.
    cfg = dict(pseudo_weight=1.0, pseudo_flex=True, pseudo_threshold=0.7, rampup_steps=50)
    full = train(tiny_config(tmp_path, **cfg, out=str(tmp_path / "full")), data=tiny_data)
    assert all(h["loss_pseudo"] > 0 for h in full.history)
    assert full.final["test_acc"] > 0.3, full.history  # chance is 0.1
    cut = tiny_config(tmp_path, **cfg, out=str(tmp_path / "cut"))
    with pytest.raises(vatlib.TrainingInterrupted):
        train(cut, data=tiny_data, on_step=lambda run: run.step == 67 and run.request_stop())
    assert (load_checkpoint(tmp_path / "cut" / "last.pth")["resume"]["term_state"]["pseudo"]["memory"] >= 0).any()
    resumed = train(cut, data=tiny_data, resume=True)
    strip = lambda history: [{k: v for k, v in h.items() if k != "time_s"} for h in history]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)


def test_all_labels_reference_trains_on_every_label_but_the_validation_ones(tmp_path, tiny_data):
    from vatlib import Run, split_train
    split = split_train(tiny_data.train_labels, 3, 60, 0)
    cfg = tiny_config(tmp_path, all_labels=True, vat_weight=0.0)  # the toy config's one unlabelled term off: supervised
    run = Run(cfg, tiny_data, split, torch.device("cpu"))
    drawn = set(run.labelled.tolist())
    assert drawn == set(split.labelled.tolist()) | set(split.unlabelled.tolist())
    assert not drawn & set(split.validation.tolist())  # validation stays held out
    _, labels = run.batch(run.labelled, cfg.batch_labelled)
    assert len(labels) == cfg.batch_labelled
    plain = Run(tiny_config(tmp_path, vat_weight=0.0), tiny_data, split, torch.device("cpu"))
    assert set(plain.labelled.tolist()) == set(split.labelled.tolist())


def test_a_registered_term_is_trained_logged_and_weighed_by_its_config(tmp_path, tiny_data):
    from vatlib.terms import EXTRA_TERMS, register_term
    seen = []

    def confidence(ctx):  # the mean top-class probability of the clean pass, to be raised
        seen.append((ctx.step, tuple(ctx.x.shape), ctx.adv_logits is not None, ctx.strong, ctx.state))
        return -ctx.logits.softmax(dim=1).amax(dim=1).mean()

    register_term("confidence", confidence, clean_grad=True)
    try:
        with pytest.raises(ValueError, match=r"unregistered term\(s\) \['nosuch'\]; allowed: \[.*'confidence'.*\]"):
            train(tiny_config(tmp_path, term_weights={"nosuch": 1.0}), data=tiny_data)
        off = train(tiny_config(tmp_path, steps=20, out=""), data=tiny_data)
        assert seen == [] and "loss_confidence" not in off.history[0]  # registered, but not weighed: not run
        run = _run(tmp_path, tiny_data, term_weights={"confidence": 0.5}, rampup_steps=10)
        assert _grad_modes_of_passes(run) == [(16, True), (32, True), (32, True), (32, True)]  # clean_grad honoured
        assert seen == [(1, (32, 1, 28, 28), True, None, {})] and run.weight("confidence") == pytest.approx(0.05)
        on = train(tiny_config(tmp_path, steps=20, out="", term_weights={"confidence": 0.5}), data=tiny_data)
        assert -1 <= on.history[0]["loss_confidence"] < 0
        assert on.history != off.history
        with pytest.raises(ValueError, match="taken by a built-in term"):
            register_term("vat", confidence)
    finally:
        EXTRA_TERMS.pop("confidence", None)


def test_the_paper_preset_trains_the_papers_mlp_with_its_schedule(tmp_path, tiny_data):
    paper = vatlib.preset_config("paper")
    assert (paper.model, paper.eps, paper.xi, paper.lr, paper.batch_labelled, paper.batch_unlabelled, paper.steps) == (
        "mlp", 5.0, 1e-6, 2e-3, 100, 250, 50_000)
    assert (paper.entmin_weight, paper.pseudo_weight, paper.stroke_p, paper.max_shift, paper.ema_decay) == (0, 0, 0, 0, 0)
    factor = vatlib.SCHEDULES["paper"].lr
    assert [factor(t, 50_000) for t in (0, 499, 500, 1000, 50_000)] == pytest.approx([1, 1, 0.9, 0.81, 0.9 ** 100])
    with pytest.raises(ValueError, match=r"lr_schedule='linear' is invalid; allowed: one of \['cosine', 'paper'\]"):
        TrainConfig(lr_schedule="linear").validate()
    # The same network and schedule on the toy data (its lr and eps, which are the toy config's). The toy digits sit
    # anywhere in the image, which 30 labels cannot teach an MLP (test accuracy stays near chance): the run is checked
    # for what it trains, its labelled loss.
    cfg = tiny_config(tmp_path, steps=60, model="mlp", lr_schedule="paper", max_shift=0, ema_decay=0.0)
    result = train(cfg, data=tiny_data)
    assert result.history[-1]["loss_sup"] < 0.6 * result.history[0]["loss_sup"], result.history
    assert all(h["loss_vat"] > 0 for h in result.history)
    assert result.history[-1]["lr"] == pytest.approx(cfg.lr)  # 60 steps: still the first 500-step epoch
    model = load_model(result.checkpoint)
    assert isinstance(model, vatlib.MLP) and model.hidden == [1200, 600, 300, 150] and model.noise == 0.5
    assert evaluate(model, tiny_data.test_images, tiny_data.test_labels) == pytest.approx(result.final["test_acc"])


def test_the_example_experiment_plugs_its_term_in_through_the_documented_context(tmp_path, tiny_data):
    """benchmarks/experiments/example_term.py registers IMSAT's mutual information as a TermContext function."""
    import importlib.util

    from vatlib.terms import EXTRA_TERMS
    path = REPO / "benchmarks" / "experiments" / "example_term.py"
    spec = importlib.util.spec_from_file_location("example_term", path)
    try:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        result = train(tiny_config(tmp_path, steps=20, out="", term_weights={"mi": 0.5}), data=tiny_data)
        assert all(-math.log(10) <= row["loss_mi"] < 0 for row in result.history)  # between -log K and 0
    finally:
        EXTRA_TERMS.pop("mi", None)


def test_a_registered_schedule_sets_the_rate_and_adams_beta1_of_every_update(tmp_path, tiny_data):
    from vatlib.schedules import SCHEDULES
    seen = []
    vatlib.register_schedule("halves", lambda t, steps: 1.0 if t < steps // 2 else 0.5,
                             beta1=lambda t, steps: 0.9 if t < steps // 2 else 0.5)
    try:
        cfg = tiny_config(tmp_path, steps=40, lr_schedule="halves", out="")
        train(cfg, data=tiny_data, on_step=lambda run: seen.append(
            (run.step, run.opt.param_groups[0]["lr"], run.opt.param_groups[0]["betas"])))
        # after update t, the rate and beta1 of update t + 1
        assert seen[18] == (19, cfg.lr, (0.9, 0.999)) and seen[19] == (20, cfg.lr * 0.5, (0.5, 0.999))
        with pytest.raises(ValueError, match="taken by a built-in schedule"):
            vatlib.register_schedule("cosine", lambda t, steps: 1.0)
    finally:
        SCHEDULES.pop("halves", None)
    with pytest.raises(ValueError, match=r"lr_schedule='halves' is invalid"):
        cfg.validate()


def test_a_registered_model_is_what_the_config_names(tmp_path, tiny_data):
    from vatlib.model import EXTRA_MODELS
    shapes = []

    def build(num_classes, shape):
        shapes.append((num_classes, shape))
        return vatlib.MLP(num_classes, hidden=(64,), in_features=shape[0] * shape[1] * shape[2])

    vatlib.register_model("small-mlp", build)
    try:
        result = train(tiny_config(tmp_path, steps=20, model="small-mlp", max_shift=0), data=tiny_data)
        assert shapes == [(10, (1, 28, 28))] and result.model.hidden == [64]
        assert load_checkpoint(result.checkpoint)["model"]["name"] == "mlp"  # vatlib's MLP, saved as itself
    finally:
        EXTRA_MODELS.pop("small-mlp", None)
    with pytest.raises(ValueError, match=r"TrainConfig.model='small-mlp' is invalid"):
        tiny_config(tmp_path, model="small-mlp").validate()
