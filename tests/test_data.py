"""Data loading, verification and the labelled split."""

import gzip
import shutil

import pytest
import torch

from conftest import SHIPPED_MNIST, mnist_copy, write_idx_dataset
from vatlib import DataError, load_dataset, random_translate, sample_labelled, split_train
from vatlib import data as data_module

MNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_shipped_mnist_is_verified_and_complete(mnist):
    assert mnist.name == "MNIST"
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == torch.uint8
    assert mnist.test_images.shape == (10000, 28, 28) and mnist.test_labels.dtype == torch.int64
    # Label counts published beside the files (shared SHA256SUMS): an independent check of the parse.
    assert torch.bincount(mnist.train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(mnist.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("gz", [True, False])
def test_tiny_dataset_round_trip(tmp_path, gz):
    root = write_idx_dataset(tmp_path, gz=gz, n_train=50, n_test=20)
    d = load_dataset("KMNIST", root, verify=False, download=False)
    assert d.train_images.shape == (50, 28, 28) and d.test_labels.shape == (20,)
    from conftest import synthetic_digits

    x, y = synthetic_digits(50, 0)
    assert torch.equal(d.train_images, torch.from_numpy(x))
    assert torch.equal(d.train_labels, torch.from_numpy(y).long())


def test_decompressed_file_is_preferred_and_verified(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in MNIST_FILES:
        shutil.copy(SHIPPED_MNIST / f, raw / f)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress((raw / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    assert load_dataset("MNIST", tmp_path, download=False).test_labels.shape == (10000,)
    # A byte changed in the decompressed copy fails its own SHA-256.
    data = bytearray((raw / "t10k-labels-idx1-ubyte").read_bytes())
    data[100] = (data[100] + 1) % 10
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: SHA256 is"):
        load_dataset("MNIST", tmp_path, download=False)


@pytest.mark.parametrize("damage", ["truncate", "flip", "swap"])
def test_damaged_mnist_file_names_the_file(tmp_path, damage):
    raw = mnist_copy(tmp_path)
    target = raw / "train-labels-idx1-ubyte.gz"
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        target.write_bytes(data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:])
    else:  # a file from the other split under this name
        shutil.copy(raw / "t10k-labels-idx1-ubyte.gz", target)
    with pytest.raises(DataError) as e:
        load_dataset("MNIST", tmp_path, download=False)
    assert str(target) in str(e.value) and "SHA256" in str(e.value) and "Delete" in str(e.value)


@pytest.mark.parametrize("damage, check", [
    ("truncate_gz", "cannot be read or decompressed"),
    ("truncate_idx", "truncated"),
    ("magic", "magic number"),
    ("size", "expected 28x28"),
    ("count", "labels"),
    ("label_range", "outside 0..9"),
])
def test_structural_checks_without_digests(tmp_path, damage, check):
    root = write_idx_dataset(tmp_path, n_train=30, n_test=10)
    raw = root / "KMNIST" / "raw"
    images, labels = raw / "train-images-idx3-ubyte.gz", raw / "train-labels-idx1-ubyte.gz"
    img = gzip.decompress(images.read_bytes())
    lbl = gzip.decompress(labels.read_bytes())
    if damage == "truncate_gz":
        images.write_bytes(images.read_bytes()[:-40])
    elif damage == "truncate_idx":
        images.write_bytes(gzip.compress(img[:-28]))
    elif damage == "magic":
        images.write_bytes(gzip.compress(lbl))  # a label file where images belong
    elif damage == "size":
        images.write_bytes(gzip.compress(img[:8] + (14).to_bytes(4, "big") + (56).to_bytes(4, "big") + img[16:]))
    elif damage == "count":
        labels.write_bytes(gzip.compress(lbl[:4] + (29).to_bytes(4, "big") + lbl[8:-1]))
    else:
        labels.write_bytes(gzip.compress(lbl[:-1] + bytes([12])))
    with pytest.raises(DataError, match=check):
        load_dataset("KMNIST", root, verify=False, download=False)


def test_unknown_dataset_lists_allowed_names():
    with pytest.raises(ValueError, match="allowed: MNIST, FashionMNIST, KMNIST"):
        load_dataset("CIFAR10")


def test_missing_files_without_download_say_where(tmp_path):
    with pytest.raises(DataError, match=r"MNIST files missing in .*MNIST/raw: train-images-idx3-ubyte"):
        load_dataset("MNIST", tmp_path, download=False)


def test_missing_files_and_failed_download_give_clear_message(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(DataError) as e:
        load_dataset("MNIST", tmp_path, download=True)
    msg = str(e.value)
    assert "download failed" in msg and str(tmp_path / "MNIST" / "raw") in msg and "train-images-idx3-ubyte.gz" in msg


def test_reference_digests_cover_every_family_member():
    for name in ("MNIST", "FashionMNIST", "KMNIST"):
        digests = data_module._reference_digests(name)
        assert {f for f in MNIST_FILES} <= set(digests), name


def test_sample_labelled_balanced_deterministic_and_seeded():
    labels = torch.arange(10).repeat_interleave(50)[torch.randperm(500)]
    a = sample_labelled(labels, per_class=7, seed=3)
    assert torch.equal(a, sample_labelled(labels, per_class=7, seed=3))
    assert not torch.equal(a, sample_labelled(labels, per_class=7, seed=4))
    assert torch.bincount(labels[a], minlength=10).tolist() == [7] * 10
    assert len(torch.unique(a)) == 70 and a.dtype == torch.int64


def test_sample_labelled_known_indices_on_mnist(mnist):
    # Pins the draw itself, so a change of sampler (which would change every reported number) is seen.
    idx = sample_labelled(mnist.train_labels, per_class=10, seed=0)
    assert torch.bincount(mnist.train_labels[idx]).tolist() == [10] * 10
    assert idx[:5].tolist() == [2287, 2678, 2884, 2931, 4977] and int(idx.sum()) == 3263161


def test_sample_labelled_too_many_per_class():
    labels = torch.tensor([0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="class 1 has only 2"):
        sample_labelled(labels, per_class=3)


def test_split_is_a_disjoint_partition():
    labels = torch.arange(10).repeat(100)
    s = split_train(labels, per_class=5, n_validation=200, seed=1)
    assert (len(s.labelled), len(s.validation), len(s.unlabelled)) == (50, 200, 750)
    together = torch.cat([s.labelled, s.validation, s.unlabelled])
    assert torch.equal(together.sort().values, torch.arange(1000))
    assert torch.equal(s.labelled, sample_labelled(labels, 5, 1))
    s2 = split_train(labels, per_class=5, n_validation=200, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(s, s2))


def test_split_validation_too_large():
    with pytest.raises(ValueError, match=r"n_validation must be in \[0, 950\]"):
        split_train(torch.arange(10).repeat(100), per_class=5, n_validation=951)


def test_random_translate_shifts_within_bounds():
    img = torch.zeros(200, 28, 28, dtype=torch.uint8)
    img[:, 13, 13] = 255
    gen = torch.Generator().manual_seed(0)
    out = random_translate(img, 2, gen)
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 28, pos % 28
    assert out.sum(dim=(1, 2)).eq(255).all()  # the pixel moved, never lost
    assert set(rows.tolist()) == set(range(11, 16)) and set(cols.tolist()) == set(range(11, 16))
    assert torch.equal(random_translate(img, 0, gen), img)


def test_random_affine_identity_and_bounds():
    from conftest import synthetic_digits

    from vatlib import random_affine, to_float

    x, _ = synthetic_digits(16, 0)
    img = torch.from_numpy(x)
    # No transform: exactly the input (bilinear sampling at pixel centres).
    assert torch.allclose(random_affine(img, 0, 0, 0), to_float(img), atol=1e-5)
    # A centred blob rotated/scaled/shifted: its centre of mass moves by at most the shift (+ rounding).
    blob = torch.zeros(64, 28, 28, dtype=torch.uint8)
    blob[:, 12:16, 12:16] = 255
    out = random_affine(blob, 2, 30, 0.2, torch.Generator().manual_seed(0))[:, 0]
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = out.sum(dim=(1, 2))
    cy, cx = (out * ys).sum(dim=(1, 2)) / mass, (out * xs).sum(dim=(1, 2)) / mass
    assert ((cy - 13.5).abs() <= 2.05).all() and ((cx - 13.5).abs() <= 2.05).all()
    assert (cy - 13.5).abs().max() > 1.0  # and it does move
    assert out.min() >= 0 and out.max() <= 1
