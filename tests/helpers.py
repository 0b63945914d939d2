"""Helpers the tests import: tiny IDX datasets written by the tests themselves, checkpoints, configs."""

import gzip
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MNIST = REPO / "data" / "MNIST" / "raw"


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic 0x08 0x<ndim>, big-endian dims, data)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def synthetic_digits(n: int, seed: int, noise: float = 0.3):
    """n images (n, 28, 28) uint8 in 10 classes, told apart by shape as digits are.

    Class c is a fixed random 8x8 binary template (the same for every seed), drawn at a random
    position in the middle of the image with random intensity, on uniform noise.
    """
    templates = np.random.default_rng(1234).random((10, 8, 8)) < 0.5
    g = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    g.shuffle(labels)
    images = g.random((n, 28, 28)) * noise
    for i, c in enumerate(labels):
        r, col = g.integers(6, 15, size=2)
        images[i, r:r + 8, col:col + 8] += templates[c] * (0.5 + 0.5 * g.random())
    return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels.astype(np.uint8)


def write_idx_dataset(root: Path, name: str = "KMNIST", n_train: int = 600, n_test: int = 200,
                      gz: bool = True, seed: int = 0) -> Path:
    """Write a synthetic dataset in torchvision's layout under root/name/raw and return root."""
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    xtr, ytr = synthetic_digits(n_train, seed)
    xte, yte = synthetic_digits(n_test, seed + 1)
    for stem, arr in [("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                      ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)]:
        data = idx_bytes(arr)
        if gz:
            (raw / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / stem).write_bytes(data)
    return root


def save_test_checkpoint(path, model=None, **kw):
    """Save a small ConvNet (or ``model``) as a checkpoint with placeholder metadata; return the model."""
    from vatlib import ConvNet, save_checkpoint

    model = model or ConvNet(width=4)
    args = dict(config={"seed": 0, "eps": 3.0}, labelled_indices=torch.arange(10), step=5, val_acc=0.5, test_acc=0.25)
    args.update(kw)
    save_checkpoint(path, model, **args)
    return model


def mnist_copy(root: Path) -> Path:
    """Copy the shipped MNIST archives to root/MNIST/raw (for tests that damage them) and return that folder."""
    import shutil

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in SHIPPED_MNIST.glob("*.gz"):
        shutil.copy(f, raw / f.name)
    return raw


def tiny_config(tmp_path, **kw):
    """A TrainConfig for the tiny synthetic data: a few seconds on one CPU thread."""
    from vatlib import TrainConfig

    # One thread: tiny convolutions only lose to threading overhead (and CI may share the machine).
    cfg = dict(dataset="KMNIST", per_class=3, n_validation=60, steps=100, batch_labelled=16, batch_unlabelled=32,
               width=8, eval_every=20, out=str(tmp_path / "run"), progress=False, device="cpu", lr=1e-2,
               num_threads=1, entmin_weight=0.0,  # entropy minimisation from step 1 collapses a 100-step toy run,
               pseudo_weight=0.0, stroke_p=0.0)  # and so do hard pseudo-labels: the toy runs train VAT alone
    cfg.update(kw)
    return TrainConfig(**cfg)
