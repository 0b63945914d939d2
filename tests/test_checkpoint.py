"""Checkpoints: round trip, atomic writes, and clear errors for bad files."""

import errno
import os
import random
import re

import pytest
import torch

from helpers import save_test_checkpoint as _save
from vatlib import CheckpointError, ConvNet, SaveError, load_checkpoint, load_model
from vatlib import checkpoint as ckpt_module


def test_round_trip_restores_outputs_and_metadata(tmp_path):
    model = ConvNet(width=4)
    model.train()
    model(torch.rand(16, 1, 28, 28))  # move BN running stats off their defaults
    model.eval()
    path = tmp_path / "m.pth"
    _save(path, model, validation_indices=torch.arange(10, 20))
    loaded = load_model(path)
    assert not loaded.training
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    ck = load_checkpoint(path)
    assert ck["model"] == {"name": "convnet", "num_classes": 10, "width": 4, "final_blocks": 2, "pool_first": False,
                           "in_channels": 1}
    assert ck["config"] == {"seed": 0, "eps": 3.0} and ck["step"] == 5
    assert ck["val_acc"] == 0.5 and ck["test_acc"] == 0.25
    assert torch.equal(ck["labelled_indices"], torch.arange(10))
    assert torch.equal(ck["validation_indices"], torch.arange(10, 20))
    assert set(ck["versions"]) == {"vatlib", "torch", "torchvision", "numpy", "python"}


def test_pool_first_round_trip_keeps_the_architecture(tmp_path):
    model = ConvNet(width=4, pool_first=True)
    model.train()
    model(torch.rand(16, 1, 28, 28))
    model.eval()
    path = tmp_path / "m.pth"
    _save(path, model)
    assert load_checkpoint(path)["model"] == {"name": "convnet", "num_classes": 10, "width": 4, "final_blocks": 2,
                                              "pool_first": True, "in_channels": 1}
    loaded = load_model(path)
    assert loaded.pool_first
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def test_final_blocks_round_trip_keeps_the_architecture(tmp_path):
    model = ConvNet(width=4, final_blocks=2)
    assert len(model.state_dict()) > len(ConvNet(width=4, final_blocks=1).state_dict())  # the extra block holds weights
    model.train()
    model(torch.rand(16, 1, 28, 28))
    model.eval()
    path = tmp_path / "m.pth"
    _save(path, model)
    assert load_checkpoint(path)["model"] == {"name": "convnet", "num_classes": 10, "width": 4, "final_blocks": 2,
                                              "pool_first": False, "in_channels": 1}
    loaded = load_model(path)
    assert loaded.final_blocks == 2
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="final_blocks >= 1"):
        ConvNet(width=4, final_blocks=0)


def test_a_checkpoint_of_an_earlier_format_is_refused_naming_its_version_and_the_tag_that_loads_it(tmp_path):
    from vatlib.checkpoint import atomic_torch_save

    path = tmp_path / "old.pth"
    _save(path)
    ckpt = load_checkpoint(path)
    ckpt["format"], ckpt["versions"]["vatlib"] = "vatlib-checkpoint-v1", "0.3.0"
    atomic_torch_save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"old.pth: written by vatlib 0.3.0 in the format 'vatlib-checkpoint-v1', "
                                              r"which vatlib 2\.\d+\.\d+ does not read; vatlib 1.0 \(git checkout "
                                              r"v1.0.0, the tag of commit fb5cddf\) loads it"):
        load_model(path)


@pytest.mark.parametrize("where", ["state_dict", "resume.model_state", "resume.ema_state"])
def test_weights_holding_nan_or_inf_are_refused_naming_the_file_and_the_tensor(tmp_path, where):
    """A diverged run's weights evaluate to chance without a word: loading (and so resuming) refuses them."""
    from vatlib.checkpoint import atomic_torch_save

    path = tmp_path / "nan.pth"
    model = _save(path)
    ckpt = load_checkpoint(path)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    weights["head.weight"][0, 0] = float("nan" if where != "resume.ema_state" else "inf")
    if where == "state_dict":
        ckpt["state_dict"] = weights
    else:
        ckpt["resume"] = {"model_state": model.state_dict(), "ema_state": model.state_dict(),
                          where.split(".")[1]: weights}
    atomic_torch_save(ckpt, path)
    with pytest.raises(CheckpointError, match=rf"nan.pth: tensor 'head.weight' of {where} holds 1 non-finite value"):
        load_model(path)


def test_a_model_of_ones_own_round_trips_through_its_checkpoint(tmp_path):
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))

        def forward(self, x):
            return self.net(x)

    path = tmp_path / "mine.pth"
    model = _save(path, Tiny())
    spec = load_checkpoint(path)["model"]
    assert spec == {"name": "custom", "class": f"{Tiny.__module__}.{Tiny.__qualname__}"}
    with pytest.raises(CheckpointError, match=r"mine.pth: holds the weights of a model of your own \(class .*Tiny\); "
                                              r"build one and pass it: load_model\(path, model=Tiny\(...\)\)"):
        load_model(path)
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(load_model(path, model=Tiny())(x), model(x))
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_model(path, model=ConvNet(width=4))


def test_saved_weight_names_stay_what_earlier_checkpoints_hold():
    """A checkpoint is loaded by parameter name, so a refactor of ConvNet must not rename them: these are the names
    best_model.pth (one final block) and the small-fast preset's checkpoints (pool_first) were saved with."""
    default = list(ConvNet(width=4, final_blocks=1).state_dict())
    assert default[:3] == ["features.0.0.weight", "features.0.1.weight", "features.0.1.bias"]
    assert "features.2.0.weight" in default  # the second block, after the first block and its pool
    pooled = list(ConvNet(width=4, pool_first=True).state_dict())
    assert pooled[:3] == ["features.0.weight", "features.2.weight", "features.2.bias"]  # conv, (pool), BN
    assert "features.4.0.weight" in pooled  # the second block
    deeper = list(ConvNet(width=4, final_blocks=2).state_dict())
    assert deeper[:len(default) - 2] == default[:-2]  # the extra block comes after every earlier weight but the head's


def test_saved_file_gets_umask_permissions(tmp_path):
    path = tmp_path / "m.pth"
    _save(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.slow
def test_shipped_best_model_reproduces_its_recorded_accuracy(mnist):
    from helpers import REPO
    from vatlib import evaluate

    ck = load_checkpoint(REPO / "best_model.pth")
    model = load_model(REPO / "best_model.pth")
    assert ck["config"]["dataset"] == "MNIST" and len(ck["labelled_indices"]) == 100
    assert evaluate(model, mnist.test_images, mnist.test_labels) == pytest.approx(ck["test_acc"], abs=1e-6)


def test_shipped_best_model_was_trained_with_the_small_long_preset():
    """The README says `python -m vatlib train --preset small-long` retrains best_model.pth: its config must be that
    preset's recipe on draw 0, and the file is in today's format (it loads with no help)."""
    from helpers import REPO
    from vatlib import draw_config, preset_config, same_recipe

    ckpt = load_checkpoint(REPO / "best_model.pth")
    assert same_recipe(ckpt["config"], draw_config(preset_config("small-long"), 0))
    assert set(ckpt["config"]) == set(preset_config().to_dict())


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model(tmp_path / "nope.pth")


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "m.pth"
    _save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{path}: not a readable PyTorch checkpoint"):
        load_model(path)


def test_random_bytes_and_foreign_objects(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_model(junk)
    # Seeded junk that makes torch's unpickler fail with IndexError (seed 2) and KeyError (seed 20) too.
    for seed in range(40):
        junk.write_bytes(random.Random(seed).randbytes(1000))
        with pytest.raises(CheckpointError, match="junk.pth"):
            load_model(junk)
    plain = tmp_path / "plain.pth"
    torch.save({"weights": torch.zeros(3)}, plain)  # a valid torch file, but not ours
    with pytest.raises(CheckpointError, match="not a vatlib checkpoint"):
        load_model(plain)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + str(self.target),))


def test_pickled_code_is_refused_not_run(tmp_path):
    target = tmp_path / "pwned.txt"
    boom = _Boom()
    boom.target = target
    path = tmp_path / "evil.pth"
    torch.save({"format": ckpt_module.FORMAT, "payload": boom}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_model(path)
    assert not target.exists(), "the pickled payload was executed"


def test_architecture_mismatch_names_it(tmp_path):
    path = tmp_path / "m.pth"
    _save(path, ConvNet(width=4))
    ck = torch.load(path, weights_only=True)
    ck["model"]["width"] = 8  # the weights are width 4
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        load_model(path)
    ck["model"] = {"name": "resnet"}
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="cannot build the model"):
        load_model(path)


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """A disk that fills up mid-write: a SaveError naming the file, the previous checkpoint untouched."""
    path = tmp_path / "best.pth"
    first = _save(path, step=1)

    def disk_full(fd):
        os.ftruncate(fd, 100)  # part of the new file reached the disk...
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ...then the disk filled up

    monkeypatch.setattr(ckpt_module.os, "fsync", disk_full)
    with pytest.raises(SaveError, match=rf"cannot write {re.escape(str(path))}: No space left on device "
                                        r"\(best.pth left unchanged\)"):
        _save(path, ConvNet(width=4), step=2)
    with pytest.raises(SaveError, match=r"new.pth: No space left on device \(new.pth not created\)"):
        _save(tmp_path / "new.pth", step=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert torch.equal(load_model(path).head.weight, first.head.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pth"], "temporary file left behind"


def test_mlp_round_trips_and_its_noise_acts_in_training_only(tmp_path):
    from vatlib import MLP

    model = MLP(hidden=(32, 16), noise=0.5)
    x = torch.rand(8, 1, 28, 28)
    model.train()
    assert not torch.equal(model(x), model(x))  # fresh noise at every training pass
    model.eval()
    assert torch.equal(model(x), model(x))
    path = tmp_path / "mlp.pth"
    _save(path, model)
    assert load_checkpoint(path)["model"] == {"name": "mlp", "num_classes": 10, "hidden": [32, 16], "noise": 0.5,
                                              "in_features": 784}
    assert torch.equal(load_model(path)(x), model(x))
    with pytest.raises(ValueError, match="expected images of shape"):
        model(torch.rand(8, 784))
