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
    assert ck["model"] == {"name": "convnet", "num_classes": 10, "width": 4, "final_blocks": 2, "pool_first": False}
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
                                              "pool_first": True}
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
                                              "pool_first": False}
    loaded = load_model(path)
    assert loaded.final_blocks == 2
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="final_blocks >= 1"):
        ConvNet(width=4, final_blocks=0)


def test_checkpoints_written_before_1_0_load_as_they_were_saved_or_are_refused_naming_the_version(tmp_path):
    from vatlib.checkpoint import atomic_torch_save

    # Before 1.0 a spec named final_blocks and pool_first only when they differed from 0.x's defaults (1, False),
    # and ConvNet's own defaults were 0.x's: such a spec still builds the one-block model it was saved from.
    old = ConvNet(width=4, final_blocks=1).eval()
    path = tmp_path / "old.pth"
    _save(path, old)
    ckpt = load_checkpoint(path)
    ckpt["model"] = {"name": "convnet", "num_classes": 10, "width": 4}
    atomic_torch_save(ckpt, path)
    x = torch.rand(4, 1, 28, 28)
    assert load_model(path).final_blocks == 1 and torch.equal(load_model(path)(x), old(x))
    # An ensemble (vatlib 0.4's members option) is refused, saying where it can be loaded.
    ckpt["model"] = {"name": "ensemble", "members": [ckpt["model"], ckpt["model"]]}
    atomic_torch_save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"old.pth: cannot build .* ensembles of models were removed in vatlib "
                                              r"1.0 \(they live in vatlib 0.4: git checkout 75ffb15\)"):
        load_model(path)


def test_saved_weight_names_stay_what_earlier_checkpoints_hold():
    """A checkpoint is loaded by parameter name, so a refactor of ConvNet must not rename them: these are the names
    best_model.pth (default order) and the fast preset's checkpoints (pool_first) were saved with."""
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


def test_shipped_best_model_was_trained_with_the_best_preset():
    """The README says `python -m vatlib train --preset best` retrains best_model.pth: its config must be that."""
    from helpers import REPO
    from vatlib import preset_config
    from vatlib.config import completed_config

    where = ("out", "progress", "device", "num_threads")  # where and how it ran, not what it trained
    saved = completed_config(load_checkpoint(REPO / "best_model.pth")["config"])  # + fields added since, as they ran
    trained = {k: v for k, v in saved.items() if k not in where}
    preset = {k: v for k, v in preset_config("best").to_dict().items() if k not in where}
    assert trained == preset


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
    assert load_checkpoint(path)["model"] == {"name": "mlp", "num_classes": 10, "hidden": [32, 16], "noise": 0.5}
    assert torch.equal(load_model(path)(x), model(x))
    with pytest.raises(ValueError, match="expected images of shape"):
        model(torch.rand(8, 784))
