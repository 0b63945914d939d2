"""Fault injection: each row of the README's robustness table is provoked here and its outcome checked.

Rows covered elsewhere: damaged data files (test_data.py::test_damaged_mnist_file_names_the_file,
::test_structural_checks_without_digests), truncated / foreign / pickled-code checkpoints
(test_checkpoint.py), invalid TrainConfig fields (test_train.py::test_invalid_config_names_field_value_and_range).
"""

import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from helpers import REPO, idx_bytes, mnist_copy, synthetic_digits, tiny_config
from helpers import save_test_checkpoint as _save
import vatlib
from vatlib import CheckpointError, ConvNet, TrainingInterrupted, load_checkpoint, load_model, train, vat_loss
from vatlib import checkpoint as checkpoint_module
from vatlib.__main__ import main


def _files(folder):
    """{relative path: bytes} of everything under folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_history(a, b):
    """Histories equal in every number but the wall-clock time."""
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    return strip(a) == strip(b)


def _same_weights(path_a, path_b):
    a, b = load_checkpoint(path_a)["state_dict"], load_checkpoint(path_b)["state_dict"]
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- data ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "corrupted", "wrong_dataset"])
def test_bad_data_file_names_file_and_check_and_nothing_is_written(tmp_path, capsys, damage):
    raw = mnist_copy(tmp_path / "data")
    target = raw / "train-images-idx3-ubyte.gz"
    data = target.read_bytes()
    if damage == "truncated":
        target.write_bytes(data[: len(data) // 3])
    elif damage == "corrupted":
        target.write_bytes(data[:5000] + bytes([data[5000] ^ 0x01]) + data[5001:])
    else:  # a well-formed IDX file of other images under MNIST's name
        target.write_bytes(gzip.compress(idx_bytes(synthetic_digits(600, seed=0)[0])))
    before = _files(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--data-root", str(tmp_path / "data"), "--out", str(out), "--steps", "5", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "SHA256" in err, err
    assert "Traceback" not in err and not out.exists()
    assert _files(tmp_path) == before, "a data file was changed, removed or added"


def test_missing_data_without_network_says_where_and_how(tmp_path, capsys, monkeypatch):
    import urllib.error

    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    out = tmp_path / "run"
    assert main(["train", "--data-root", str(tmp_path / "nowhere"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in err and "train-images-idx3-ubyte.gz" in err, err
    assert "download failed" in err and not out.exists()


# --- checkpoints -------------------------------------------------------------------------------------

def test_checkpoint_of_another_class_count_names_the_mismatch(tmp_path, capsys):
    path = tmp_path / "five.pth"
    _save(path, ConvNet(num_classes=5, width=4))
    ck = torch.load(path, weights_only=True)
    ck["model"]["num_classes"] = 10  # spec says 10 classes, weights have 5
    torch.save(ck, tmp_path / "lying.pth")
    with pytest.raises(CheckpointError, match=r"lying\.pth: weights do not fit the architecture .*num_classes"):
        load_model(tmp_path / "lying.pth")
    # A consistent 5-class checkpoint is a fine model, but not one for the 10 MNIST classes.
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "five.pth: the model predicts 5 classes but MNIST has 10" in err, err


CHILD_KILLED_WHILE_SAVING = textwrap.dedent("""
    import os, signal, sys
    import torch
    import vatlib.checkpoint as c
    from vatlib import ConvNet

    def dying_fsync(fd):
        os.ftruncate(fd, os.fstat(fd).st_size // 2)  # half the new checkpoint is on disk...
        os.kill(os.getpid(), signal.SIGKILL)          # ...when the process is killed

    c.os.fsync = dying_fsync
    c.save_checkpoint(sys.argv[1], ConvNet(width=4), config={}, labelled_indices=torch.arange(3), step=2,
                      val_acc=0.9, test_acc=0.9)
""")


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one_loadable(tmp_path):
    path = tmp_path / "best.pth"
    first = ConvNet(width=4)
    _save(path, first, step=1)
    proc = subprocess.run([sys.executable, "-c", CHILD_KILLED_WHILE_SAVING, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].startswith(".best.pth.") and leftovers[0].endswith(".tmp")
    assert load_checkpoint(path)["step"] == 1
    assert torch.equal(load_model(path).head.weight, first.head.weight)


# --- interruption and resumption ---------------------------------------------------------------------

def _sigint_at(steps, times=1):
    """An on_step callback that sends this process SIGINT (a real Ctrl-C) at the end of the given steps."""
    def on_step(run):
        if run.step in steps:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)  # let the handler run before the next signal
    return on_step


@pytest.fixture
def default_sigint():
    """Ctrl-C with Python's default handler, as in a terminal (a test run may have it ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resume_equals_an_uninterrupted_run(tmp_path, tiny_data, default_sigint):
    full = train(tiny_config(tmp_path, steps=60, out=str(tmp_path / "full")), data=tiny_data)
    cfg = tiny_config(tmp_path, steps=60, out=str(tmp_path / "cut"))
    with pytest.raises(TrainingInterrupted, match=r"interrupted at step 33 of 60: state saved to .*last\.pth") as e:
        train(cfg, data=tiny_data, on_step=_sigint_at({33}))
    assert e.value.step == 33
    # Stopped at the end of step 33: the state is saved there, the best checkpoint is untouched.
    assert load_checkpoint(tmp_path / "cut" / "last.pth")["resume"]["step"] == 33
    assert load_checkpoint(tmp_path / "cut" / "best.pth")["step"] == 20
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "SIGINT handler not restored"

    resumed = train(cfg, data=tiny_data, resume=True)
    assert _same_history(resumed.history, full.history)
    assert resumed.best == full.best and resumed.final == full.final
    for name in ("best.pth", "last.pth"):
        assert _same_weights(tmp_path / "cut" / name, tmp_path / "full" / name), name
    assert load_checkpoint(tmp_path / "cut" / "last.pth")["resume"]["step"] == 60
    assert json.loads((tmp_path / "cut" / "history.json").read_text())[-1]["step"] == 60


@pytest.mark.slow
def test_second_ctrl_c_aborts_at_once_and_the_last_evaluation_still_resumes(tmp_path, tiny_data, default_sigint):
    full = train(tiny_config(tmp_path, steps=60, out=str(tmp_path / "full")), data=tiny_data)
    cfg = tiny_config(tmp_path, steps=60, out=str(tmp_path / "cut"))
    with pytest.raises(KeyboardInterrupt) as e:
        train(cfg, data=tiny_data, on_step=_sigint_at({45}, times=2))
    assert not isinstance(e.value, TrainingInterrupted)  # aborted at once: nothing saved for step 45
    assert load_checkpoint(tmp_path / "cut" / "last.pth")["resume"]["step"] == 40
    resumed = train(cfg, data=tiny_data, resume=True)
    assert _same_history(resumed.history, full.history)
    assert _same_weights(tmp_path / "cut" / "last.pth", tmp_path / "full" / "last.pth")


def test_ignored_ctrl_c_stays_ignored(tmp_path, tiny_data):
    """A process that ignores SIGINT (a script's background job) is not made interruptible by train()."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        seen = []
        train(tiny_config(tmp_path, steps=5, out=""), data=tiny_data,
              on_step=lambda run: seen.append(signal.getsignal(signal.SIGINT)))
        assert len(seen) == 5 and all(h is signal.SIG_IGN for h in seen)
    finally:
        signal.signal(signal.SIGINT, before)


def test_resume_refuses_a_different_config_or_a_missing_state(tmp_path, tiny_data):
    train(tiny_config(tmp_path, steps=20), data=tiny_data)
    with pytest.raises(ValueError, match=r"config differs .*eps: saved 3.0, now 2.0"):
        train(tiny_config(tmp_path, steps=20, eps=2.0), data=tiny_data, resume=True)
    with pytest.raises(CheckpointError, match=r"elsewhere.last\.pth: no training state to resume from"):
        train(tiny_config(tmp_path, steps=20, out=str(tmp_path / "elsewhere")), data=tiny_data, resume=True)
    with pytest.raises(CheckpointError, match="holds no training state"):
        train(tiny_config(tmp_path, steps=20), data=tiny_data, resume=tmp_path / "run" / "best.pth")


CLI_RUN = ["-m", "vatlib", "train", "--steps", "200", "--eval-every", "40", "--width", "4", "--batch-labelled", "16",
           "--batch-unlabelled", "32", "--n-validation", "200", "--num-threads", "1", "--no-progress"]


@pytest.mark.slow
def test_cli_ctrl_c_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    """The real thing: SIGINT to a `python -m vatlib train` process, then `--resume`."""
    run = lambda out, *extra: subprocess.run([sys.executable, *CLI_RUN, "--out", str(out), *extra], cwd=REPO,  # noqa: E731
                                             capture_output=True, text=True, timeout=300)
    full = run(tmp_path / "full")
    assert full.returncode == 0, full.stderr

    cut = tmp_path / "cut"
    # SIG_DFL in the child: Ctrl-C as in a terminal, even if this test process ignores SIGINT.
    proc = subprocess.Popen([sys.executable, *CLI_RUN, "--out", str(cut)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (cut / "history.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stderr and "resume with: python -m vatlib train" in stderr, stderr
    stopped = load_checkpoint(cut / "last.pth")["resume"]["step"]
    assert 40 <= stopped < 200
    load_model(cut / "best.pth")  # intact

    resumed = run(cut, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"(resuming at step {stopped + 1})" in resumed.stdout
    assert _same_history(json.loads((cut / "history.json").read_text()),
                         json.loads((tmp_path / "full" / "history.json").read_text()))
    for name in ("best.pth", "last.pth"):
        assert _same_weights(cut / name, tmp_path / "full" / name), name
    # "test accuracy: xx.xx%  (checkpoint chosen on validation; wall time ...)": same figure.
    assert resumed.stdout.splitlines()[-1].split("(")[0] == full.stdout.splitlines()[-1].split("(")[0]


# --- NaN / inf ---------------------------------------------------------------------------------------

def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoints(tmp_path, tiny_data):
    def poison(run):  # after step 46's update, the weights turn NaN: step 47's loss is the first bad one
        if run.step == 46:
            run.model.head.bias.data.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match=r"step 47: loss is nan \(sup nan, vat nan\); training stopped "
                                                 r"before this update") as e:
        train(tiny_config(tmp_path, steps=60), data=tiny_data, on_step=poison)
    msg = str(e.value)
    best, last = tmp_path / "run" / "best.pth", tmp_path / "run" / "last.pth"
    assert f"{best} (step " in msg and f"{last} (step 40)" in msg, msg
    assert load_checkpoint(last)["resume"]["step"] == 40 and load_checkpoint(best)["step"] <= 40
    for path in (best, last):
        assert all(torch.isfinite(p).all() for p in load_model(path).parameters())


def test_an_infinite_loss_is_refused_too(tmp_path, tiny_data):
    def poison(run):
        if run.step == 6:
            run.model.head.bias.data.fill_(float("inf"))

    with pytest.raises(FloatingPointError, match=r"step 7: loss is (inf|nan) \(sup .*\).*No checkpoint was written"):
        train(tiny_config(tmp_path, eval_every=20), data=tiny_data, on_step=poison)
    assert not (tmp_path / "run" / "best.pth").exists()


# --- run folders: nothing finished is lost -----------------------------------------------------------

@pytest.mark.slow
def test_a_second_run_into_a_finished_runs_folder_is_refused_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "a"
    args = ["train", "--steps", "10", "--eval-every", "5", "--width", "4", "--batch-unlabelled", "16",
            "--out", str(out), "--no-progress", "--num-threads", "1"]
    assert main([*args, "--seed", "1"]) == 0
    before = _files(out)
    capsys.readouterr()
    assert main([*args, "--seed", "2"]) == 2
    err = capsys.readouterr().err
    assert f"error: {out} already holds a run (best.pth, last.pth, history.json, config.json); nothing was changed" in err
    assert all(option in err for option in ("--resume", "another --out", "--overwrite")), err
    assert _files(out) == before, "the finished run was changed"
    # Asked explicitly, the second run replaces the first.
    assert main([*args, "--seed", "2", "--overwrite"]) == 0
    assert load_checkpoint(out / "best.pth")["config"]["seed"] == 2
    assert json.loads((out / "config.json").read_text())["seed"] == 2


def test_overwrite_removes_nothing_when_the_new_run_is_invalid(tmp_path, tiny_data):
    cfg = tiny_config(tmp_path, steps=10, eval_every=5)
    train(cfg, data=tiny_data)
    before = _files(tmp_path / "run")
    with pytest.raises(ValueError, match="per_class=61 is too large"):
        train(tiny_config(tmp_path, steps=10, per_class=61), data=tiny_data, overwrite=True)
    assert _files(tmp_path / "run") == before


def test_full_disk_while_saving_names_the_file_and_the_intact_checkpoint(tmp_path, capsys, monkeypatch):
    """The disk fills up at the second evaluation's best.pth: one line naming it, the first evaluation's files intact."""
    out = tmp_path / "run"
    real_fsync, calls = os.fsync, []

    def filling_disk(fd):
        calls.append(fd)
        if len(calls) > 4:  # config.json, then best.pth, history.json, last.pth of the first evaluation
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(checkpoint_module.os, "fsync", filling_disk)
    # VAT with entropy minimisation (no pseudo-labels or strokes): its second evaluation improves on
    # validation, so the write that fails is that of best.pth.
    code = main(["train", "--steps", "20", "--eval-every", "5", "--width", "4", "--batch-unlabelled", "16",
                 "--out", str(out), "--no-progress", "--num-threads", "1", "--max-shift", "0",
                 "--entmin-weight", "1", "--pseudo-weight", "0", "--stroke-p", "0"])
    monkeypatch.undo()
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: cannot write {out / 'best.pth'}: No space left on device (best.pth left unchanged)")
    assert f"Last good checkpoints kept: {out / 'best.pth'} (step 5), {out / 'last.pth'} (step 5)" in err, err
    assert load_checkpoint(out / "best.pth")["step"] == 5 and load_checkpoint(out / "last.pth")["resume"]["step"] == 5
    assert sorted(p.name for p in out.iterdir()) == ["best.pth", "config.json", "history.json", "last.pth"]


# --- invalid config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("per_class", 61, "per_class=61 is too large: class .* has only 60 examples; allowed: 1..60"),
    ("n_validation", 590, r"n_validation=590 is invalid; allowed: n_validation must be in \[0, 570\]"),
])
def test_config_that_does_not_fit_the_data_fails_before_any_work(tmp_path, tiny_data, field, value, message):
    cfg = tiny_config(tmp_path, **{field: value})
    with pytest.raises(ValueError, match=message):
        train(cfg, data=tiny_data)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--eps", "0", "TrainConfig.eps=0.0 is invalid; allowed: > 0"),
    ("--xi", "-1", "TrainConfig.xi=-1.0 is invalid; allowed: > 0"),
    ("--n-power", "0", "TrainConfig.n_power=0 is invalid; allowed: an integer >= 1"),
    ("--dataset", "CIFAR10", "TrainConfig.dataset='CIFAR10' is invalid; allowed: one of"),
    ("--device", "cuda:7", "device='cuda:7' is not available"),
    ("--per-class", "7000", "per_class=7000 is too large"),
    ("--n-validation", "60000", "n_validation=60000 is invalid"),
])
def test_cli_rejects_invalid_config_without_writing_anything(tmp_path, capsys, flag, value, message):
    out = tmp_path / "run"
    assert main(["train", flag, value, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists()


# --- determinism ------------------------------------------------------------------------------------

def test_same_seeds_twice_give_identical_labelled_indices_and_metrics(tmp_path, tiny_data):
    a = train(tiny_config(tmp_path, steps=40, out=str(tmp_path / "a")), data=tiny_data)
    b = train(tiny_config(tmp_path, steps=40, out=str(tmp_path / "b")), data=tiny_data)
    ca, cb = load_checkpoint(a.checkpoint), load_checkpoint(b.checkpoint)
    assert torch.equal(ca["labelled_indices"], cb["labelled_indices"])
    assert torch.equal(ca["validation_indices"], cb["validation_indices"])
    assert _same_history(a.history, b.history) and a.best == b.best
    assert _same_weights(a.checkpoint, b.checkpoint)


# --- bad inputs to the public functions -------------------------------------------------------------

BAD_IMAGES = [
    (torch.rand(2, 28, 28), ValueError, r"shape \(N, 1, H, W\) with H, W >= 4, got \(2, 28, 28\) \(add the channel dim"),
    (torch.rand(2, 3, 32, 32), ValueError, r"shape \(N, 1, H, W\) with H, W >= 4, got \(2, 3, 32, 32\)"),
    ((torch.rand(2, 1, 28, 28) * 255).to(torch.uint8), TypeError, "floating-point images .* vatlib.to_float"),
    (torch.rand(2, 1, 28, 28, dtype=torch.float64), TypeError, "torch.float64 on cpu but the model is torch.float32"),
    (torch.rand(2, 1, 28, 28) * 255, ValueError, r"scaled to \[0, 1\], got values from .* \(0-255 pixels\?"),
    (torch.full((2, 1, 28, 28), float("nan")), ValueError, r"scaled to \[0, 1\], got values from nan"),
    ([[0.0] * 28] * 28, TypeError, "expected a torch.Tensor"),
]


@pytest.mark.parametrize("x, error, message", BAD_IMAGES)
def test_loaded_model_rejects_bad_images_with_a_clear_error(x, error, message):
    model = load_model(REPO / "best_model.pth")
    with pytest.raises(error, match=message):
        model(x)


@pytest.mark.parametrize("x, error, message", [
    (torch.rand(2, 28, 28), ValueError, "add the channel dim"),  # from the model: vat_loss takes any shape
    (torch.rand(2, 3, 32, 32), ValueError, r"shape \(N, 1, H, W\)"),
    ((torch.rand(2, 1, 28, 28) * 255).to(torch.uint8), TypeError, "floating-point tensor"),
    (torch.rand(2, 1, 28, 28, dtype=torch.float64), TypeError, "torch.float64 on cpu but the model is torch.float32"),
    (torch.rand(2, 1, 28, 28) * 255, ValueError, r"0-255 pixels\?"),
    (torch.full((2, 1, 28, 28), float("nan")), ValueError, "x contains NaN or inf"),
    (torch.full((2, 1, 28, 28), float("inf")), ValueError, "x contains NaN or inf"),
    ([[0.0] * 28] * 28, TypeError, "x must be a torch.Tensor"),
])
def test_vat_loss_rejects_bad_images_with_a_clear_error(x, error, message):
    with pytest.raises(error, match=message):
        vat_loss(ConvNet(width=4), x, eps=1.0)


def test_perturbed_images_are_accepted():
    """The range check leaves room for VAT: x + r_adv with eps = 4 passes."""
    model = ConvNet(width=4)
    x = torch.rand(4, 1, 28, 28)
    assert torch.isfinite(vat_loss(model, x, eps=4.0))
    assert model(x + 4.0 * torch.nn.functional.normalize(torch.randn_like(x).flatten(1)).view_as(x)).shape == (4, 10)


# --- two runs into one folder ----------------------------------------------------------------------------------------

def test_a_second_run_into_a_folder_another_run_is_writing_to_is_refused_at_once(tmp_path, tiny_data):
    """Two runs started at the same moment into one folder: the second is refused while the first holds it, and the
    first one's files stay whole."""
    refused = []

    def second_run(run):
        with pytest.raises(vatlib.RunLockedError, match=rf"{tmp_path / 'run'} is in use by another run \(pid "
                                                        rf"{os.getpid()} on .*\); nothing was changed"):
            vatlib.train(tiny_config(tmp_path, seed=1), data=tiny_data, overwrite=True)
        refused.append(run.step)

    first = vatlib.train(tiny_config(tmp_path, steps=40), data=tiny_data, on_start=second_run)
    assert refused == [0] and first.history[-1]["step"] == 40
    assert load_checkpoint(tmp_path / "run" / "last.pth")["config"]["seed"] == 0  # the first run's files, whole
    assert not (tmp_path / "run" / ".lock").exists()  # released when the run ended


def test_a_run_that_fails_before_writing_leaves_no_folder_and_no_lock(tmp_path, tiny_data):
    rgb = vatlib.ImageData.from_arrays(tiny_data.train_images[:, None].repeat(1, 3, 1, 1), tiny_data.train_labels,
                                       tiny_data.test_images[:, None].repeat(1, 3, 1, 1), tiny_data.test_labels)
    out = tmp_path / "deep" / "run"
    with pytest.raises(ValueError, match="draws a pen stroke"):  # refused once the data are known, under the lock
        vatlib.train(tiny_config(tmp_path, out=str(out), stroke_p=0.5), data=rgb)
    assert list(tmp_path.iterdir()) == [tmp_path / "KMNIST"]  # the tiny data's folder only: no run folder left


def test_a_lock_left_by_a_dead_process_blocks_nothing(tmp_path, tiny_data):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from vatlib.runs import FolderLock\n"
                               f"with FolderLock(Path({str(out)!r})):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(vatlib.RunLockedError, match=rf"pid {holder.pid} on "):
            vatlib.train(tiny_config(tmp_path, steps=20), data=tiny_data)
    finally:
        holder.kill()  # SIGKILL: no clean-up of its own; its lock file stays
        holder.wait()
    assert (out / ".lock").exists()
    assert vatlib.train(tiny_config(tmp_path, steps=20), data=tiny_data).history[-1]["step"] == 20
