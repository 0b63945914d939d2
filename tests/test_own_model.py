"""A model of one's own on images that are not MNIST's: 3x32x32 arrays through ``vatlib.train`` end to end."""

import numpy as np
import pytest
import torch
from torch import nn

import vatlib
from helpers import tiny_config


class SmallCNN(nn.Module):
    """A model defined here, as a user would: (N, 3, 32, 32) in [0, 1] -> logits (N, 4)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
                                 nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def colour_squares(n: int, seed: int):
    """n RGB images (n, 3, 32, 32) uint8 in 4 classes: a bright square whose colour channel and corner say the class."""
    g = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    g.shuffle(labels)
    images = g.random((n, 3, 32, 32)) * 0.3
    for i, c in enumerate(labels):
        r, col = (2 + g.integers(0, 4), 2 + g.integers(0, 4)) if c < 2 else (18 + g.integers(0, 4), 18 + g.integers(0, 4))
        images[i, c % 3, r:r + 10, col:col + 10] += 0.6 + 0.3 * g.random()
    return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels


@pytest.fixture
def rgb_data():
    x_train, y_train = colour_squares(400, 0)
    x_test, y_test = colour_squares(100, 1)
    return vatlib.ImageData.from_arrays(x_train, y_train, x_test, y_test, name="colour-squares")


def rgb_config(tmp_path, **kw):
    return tiny_config(tmp_path, **{"dataset": "MNIST", "per_class": 5, "n_validation": 40, "steps": 80, **kw})


def _strip(history):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in history]


def test_a_model_of_ones_own_trains_resumes_and_evaluates_on_rgb_images(tmp_path, rgb_data):
    assert rgb_data.image_shape == (3, 32, 32)
    full = vatlib.train(rgb_config(tmp_path, out=str(tmp_path / "full")), data=rgb_data, model=SmallCNN)
    assert full.final["test_acc"] > 0.8, full.history  # chance is 0.25
    assert all(row["loss_vat"] > 0 for row in full.history)
    assert isinstance(full.model, SmallCNN) and not full.model.training

    # Interrupted at step 50, then resumed with the same model: the same history, number for number.
    cfg = rgb_config(tmp_path, out=str(tmp_path / "cut"))
    with pytest.raises(vatlib.TrainingInterrupted):
        vatlib.train(cfg, data=rgb_data, model=SmallCNN, on_step=lambda run: run.step == 50 and run.request_stop())
    resumed = vatlib.train(cfg, data=rgb_data, model=SmallCNN, resume=True)
    assert _strip(resumed.history) == _strip(full.history)

    # The checkpoint holds the weights; the user's class rebuilds the model, and it scores what the run recorded.
    ckpt = vatlib.load_checkpoint(resumed.checkpoint)
    assert ckpt["model"]["name"] == "custom" and ckpt["model"]["class"].endswith("SmallCNN")
    with pytest.raises(vatlib.CheckpointError, match=r"model=SmallCNN\(...\)"):
        vatlib.load_model(resumed.checkpoint)
    model = vatlib.load_model(resumed.checkpoint, model=SmallCNN())
    acc = vatlib.evaluate(model, rgb_data.test_images, rgb_data.test_labels)
    assert acc == pytest.approx(ckpt["test_acc"]) and acc == pytest.approx(resumed.best["test_acc"])
    assert vatlib.predict(model, rgb_data.test_images[:5]).shape == (5,)

    # Resuming with another model is refused, naming both.
    with pytest.raises(ValueError, match="resuming needs the same model"):
        vatlib.train(cfg, data=rgb_data, model=lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4)),
                     resume=True)


def test_a_users_model_is_seeded_like_vatlibs_own(tmp_path, rgb_data):
    """The run's seed draws the initial weights, whether the model is passed built or as what builds it."""
    def initial_weights(model, seed):
        seen = []
        vatlib.train(rgb_config(tmp_path, steps=1, eval_every=1, out="", seed=seed), data=rgb_data, model=model,
                     on_start=lambda run: seen.append({k: v.clone() for k, v in run.model.state_dict().items()}))
        return seen[0]

    torch.manual_seed(123)  # the global state when the user built it does not matter
    a = initial_weights(SmallCNN(), seed=0)
    torch.manual_seed(456)
    b = initial_weights(SmallCNN(), seed=0)
    c = initial_weights(SmallCNN, seed=0)
    d = initial_weights(SmallCNN, seed=1)
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    assert not torch.equal(a["net.0.weight"], d["net.0.weight"])


def test_vatlibs_convnet_and_the_views_take_rgb_images(tmp_path, rgb_data):
    # The shifts, rotations and zooms move every channel of an image alike.
    images = torch.as_tensor(rgb_data.train_images[:6])
    g = torch.Generator().manual_seed(0)
    shifted = vatlib.random_translate(images, 3, generator=g)
    assert shifted.shape == images.shape
    for i in range(6):  # one offset per image: each channel moved by it
        offsets = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                   if torch.equal(shifted[i], torch.roll(images[i], (dy, dx), (1, 2)) * _inside(dy, dx))]
        assert offsets, i
    view = vatlib.random_affine(images, 2, 15.0, 0.1, generator=g)
    assert view.shape == (6, 3, 32, 32) and view.dtype == torch.float32
    # vatlib's own model, sized for the data, with the recipe's strong views (the stroke is single-channel ink).
    with pytest.raises(ValueError, match=r"stroke_p=0.5 draws a pen stroke, on single-channel images only; these "
                                         r"images have 3 channels: set stroke_p=0"):
        vatlib.train(rgb_config(tmp_path, stroke_p=0.5), data=rgb_data)
    result = vatlib.train(rgb_config(tmp_path, pseudo_weight=1.0, rampup_steps=30), data=rgb_data)
    spec = vatlib.load_checkpoint(result.checkpoint)["model"]
    assert spec["name"] == "convnet" and spec["in_channels"] == 3 and spec["num_classes"] == 4
    assert vatlib.evaluate(vatlib.load_model(result.checkpoint), rgb_data.test_images,
                           rgb_data.test_labels) == pytest.approx(result.best["test_acc"])
    mlp = vatlib.train(rgb_config(tmp_path, model="mlp", out=""), data=rgb_data)
    assert mlp.model.in_features == 3 * 32 * 32


def _inside(dy, dx):
    """The mask of the pixels a shift by (dy, dx) keeps (zero fill elsewhere), for (3, 32, 32) images."""
    mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    mask[:, max(dy, 0):32 + min(dy, 0), max(dx, 0):32 + min(dx, 0)] = 1
    return mask


def test_a_model_that_does_not_fit_the_data_is_refused_before_anything_is_written(tmp_path, rgb_data):
    out = tmp_path / "run"
    for model, message in [
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 4)), r"fails on images of shape \(2, 3, 32, 32\)"),
        (lambda: SmallCNN(num_classes=10), r"returns \(2, 10\) for images \(2, 3, 32, 32\); expected logits \(2, 4\)"),
        (lambda: "not a model", "the model factory returned str"),
        (nn.Sequential(), "has no trainable parameters"),
    ]:
        with pytest.raises((ValueError, TypeError), match=message):
            vatlib.train(rgb_config(tmp_path, out=str(out)), data=rgb_data, model=model)
        assert not out.exists()


def test_resume_refuses_a_state_holding_nan_weights_naming_the_tensor(tmp_path, rgb_data):
    from vatlib.checkpoint import atomic_torch_save

    cfg = rgb_config(tmp_path, steps=40)
    with pytest.raises(vatlib.TrainingInterrupted):
        vatlib.train(cfg, data=rgb_data, model=SmallCNN, on_eval=lambda run: run.request_stop())
    last = tmp_path / "run" / "last.pth"
    ckpt = vatlib.load_checkpoint(last)
    ckpt["resume"]["model_state"]["net.0.weight"][0, 0, 0, 0] = float("nan")
    atomic_torch_save(ckpt, last)
    with pytest.raises(vatlib.CheckpointError, match=r"last.pth: tensor 'net.0.weight' of resume.model_state holds 1 "
                                                     r"non-finite value"):
        vatlib.train(cfg, data=rgb_data, model=SmallCNN, resume=True)


def test_the_command_line_says_how_to_evaluate_a_model_of_ones_own(tmp_path, rgb_data, capsys):
    from vatlib.__main__ import main

    path = tmp_path / "mine.pth"
    vatlib.save_checkpoint(path, SmallCNN(), config=rgb_config(tmp_path).to_dict(), labelled_indices=torch.arange(4),
                           step=1, val_acc=0.5, test_acc=0.5)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "holds a model of one's own" in err and "vatlib.load_model(path, model=YourModel(...))" in err
