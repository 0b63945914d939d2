"""Data loading, verification and the labelled split."""

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from helpers import SHIPPED_MNIST, mnist_copy, write_idx_dataset
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
    from helpers import synthetic_digits

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
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: SHA256 of the decompressed data is"):
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


def test_digests_cover_every_family_member():
    for name in ("MNIST", "FashionMNIST", "KMNIST"):
        assert set(MNIST_FILES) <= set(data_module._archive_digests(name)), name
    for name in ("MNIST", "FashionMNIST"):  # the content digests that decide
        assert set(data_module.CONTENT_SHA256[name]) == {f[:-3] for f in MNIST_FILES}, name


def _recompress(path, level=1, change=None):
    """Decompress a .gz, optionally change one byte of the IDX data, and recompress it (as `zcat | gzip -1`)."""
    data = bytearray(gzip.decompress(path.read_bytes()))
    if change is not None:
        data[change] ^= 0x01
    path.write_bytes(gzip.compress(bytes(data), compresslevel=level, mtime=0))


@pytest.mark.parametrize("container", ["gzip -1", "gzip -5", "decompressed"])
def test_genuine_mnist_in_another_container_loads(tmp_path, mnist, container):
    raw = mnist_copy(tmp_path)
    for f in MNIST_FILES:
        if container == "decompressed":
            (raw / f[:-3]).write_bytes(gzip.decompress((raw / f).read_bytes()))
            (raw / f).unlink()
        else:
            _recompress(raw / f, level=int(container[-1]))
            assert data_module._digest(raw / f, "sha256") != data_module.MNIST_ARCHIVE_SHA256[f]  # not the archive
    data = load_dataset("MNIST", tmp_path, download=False)
    assert torch.equal(data.train_images, mnist.train_images) and torch.equal(data.test_labels, mnist.test_labels)
    assert "SHA-256 of the decompressed data" in data.source


@pytest.mark.parametrize("f, byte", [("train-images-idx3-ubyte.gz", 16 + 28 * 14 + 14), ("t10k-labels-idx1-ubyte.gz", 8 + 5)])
def test_recompressed_file_with_one_changed_byte_is_refused(tmp_path, f, byte):
    raw = mnist_copy(tmp_path)
    _recompress(raw / f, change=byte)  # one pixel (or one label) off, in a valid gzip container
    with pytest.raises(DataError, match=rf"{f}: SHA256 of the decompressed data is [0-9a-f]{{64}}, expected "
                                        rf"{data_module.CONTENT_SHA256['MNIST'][f[:-3]]} for MNIST"):
        load_dataset("MNIST", tmp_path, download=False)


def test_other_content_under_fashion_mnist_names_is_refused(tmp_path):
    root = write_idx_dataset(tmp_path, name="FashionMNIST", n_train=60, n_test=20)
    with pytest.raises(DataError, match=r"FashionMNIST/raw/train-images-idx3-ubyte.gz: SHA256 of the decompressed "
                                        r"data is .* expected c59f468a"):
        load_dataset("FashionMNIST", root, download=False)


def test_kmnist_without_a_recorded_content_digest_says_how_to_proceed(tmp_path):
    root = write_idx_dataset(tmp_path, name="KMNIST", n_train=60, n_test=20)
    with pytest.raises(DataError, match=r"not that of the published KMNIST archive, and no digest of the decompressed "
                                        r"KMNIST data is recorded.*verify=False"):
        load_dataset("KMNIST", root, download=False)
    assert load_dataset("KMNIST", root, download=False, verify=False).train_images.shape == (60, 28, 28)


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed (optional)")
def test_debian_fashion_mnist_loads(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in MNIST_FILES:
        (raw / f).symlink_to(DEBIAN_FASHION / f)
    data = load_dataset("FashionMNIST", tmp_path, download=False)
    assert torch.bincount(data.train_labels).tolist() == [6000] * 10 and data.test_images.shape == (10000, 28, 28)


# --- arrays of one's own ---------------------------------------------------------------------------

def test_image_data_from_numpy_arrays():
    import numpy as np

    from vatlib import ImageData

    g = np.random.default_rng(0)
    x, y = g.integers(0, 256, (40, 28, 28), dtype=np.uint8), np.arange(40) % 4
    data = ImageData.from_arrays(x, y, x[:8], y[:8].astype(np.int32), name="mine")
    assert data.name == "mine" and data.source == "arrays" and data.train_labels.dtype == torch.int64
    assert torch.equal(data.train_images, torch.from_numpy(x)) and data.fingerprint()["classes"] == 4
    other = ImageData.from_arrays(x, (y + 1) % 4, x[:8], y[:8], name="mine")
    assert other.fingerprint()["sha256"] != data.fingerprint()["sha256"]


@pytest.mark.parametrize("change, error, message", [
    (dict(train_images=torch.rand(10, 28, 28)), TypeError, r"train_images must be uint8 pixels 0-255, got dtype torch.float32"),
    (dict(train_images=torch.zeros(10, 784, dtype=torch.uint8)), ValueError,
         r"train_images must have shape \(N, H, W\) or \(N, C, H, W\), got \(10, 784\)"),
        (dict(train_images=torch.zeros(10, 28, 28, 3, dtype=torch.uint8)), ValueError,
         r"channels last \(N, H, W, C\) by the look of it; allowed: \(N, C, H, W\) \(images.permute\(0, 3, 1, 2\)\)"),
        (dict(train_images=torch.zeros(10, 1, 28, 28, dtype=torch.uint8)), ValueError,
         r"train_images are \(1, 28, 28\) per image but test_images are \(28, 28\); allowed: the same shape"),
    (dict(train_labels=torch.arange(10.0)), TypeError, "train_labels must be a 1-D array of integer class indices"),
    (dict(train_labels=torch.arange(9)), ValueError, "train_images has 10 images but train_labels has 9 labels"),
    (dict(train_labels=torch.arange(10) - 1), ValueError, "train_labels holds -1; allowed: class indices 0..C-1"),
    (dict(test_labels=torch.full((4,), 12)), ValueError, "test_labels holds class 12, but the training labels only go up to 9"),
    # Ten classes numbered 1..10 would make an eleventh, empty class 0.
    (dict(train_labels=torch.arange(10) + 1, test_labels=torch.arange(4) + 1), ValueError,
     r"train_labels must use every class 0..10, but class\(es\) \[0\] have no image; number the classes from 0"),
    (dict(train_labels=torch.tensor([0, 1, 2, 4, 5, 0, 1, 2, 4, 5])), ValueError, r"class\(es\) \[3\] have no image"),
])
def test_image_data_from_arrays_names_the_bad_array(change, error, message):
    from vatlib import ImageData

    arrays = dict(train_images=torch.zeros(10, 28, 28, dtype=torch.uint8), train_labels=torch.arange(10),
                  test_images=torch.zeros(4, 28, 28, dtype=torch.uint8), test_labels=torch.arange(4))
    with pytest.raises(error, match=message):
        ImageData.from_arrays(**{**arrays, **change})


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
    from helpers import synthetic_digits

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


def test_random_stroke_adds_one_straight_line_through_the_ink():
    from vatlib.augment import random_stroke
    x = torch.zeros(400, 1, 28, 28)
    x[:, :, 4:24, 13:15] = 1.0  # a "1": ink in the middle two columns
    out = random_stroke(x, 1.0, length=(6.0, 12.0), width=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, (x > 0).float()) and (out >= x).all() and out.max() <= 1  # ink is only ever added
    new = (out > x).flatten(1)
    assert new.any(1).float().mean() > 0.8  # a stroke along the ink itself adds little or nothing
    # One stroke: a segment at most 12 long, inked up to 1.5 px from it (half the width + the antialiasing
    # ramp), so within 15 x 15 pixels, centred on the ink.
    for img in range(20):
        rows, cols = torch.nonzero((out[img, 0] > x[img, 0]), as_tuple=True)
        if len(rows):
            assert rows.max() - rows.min() <= 14 and cols.max() - cols.min() <= 14
            assert rows.min() <= 24 + 7 and rows.max() >= 4 - 7 and cols.min() <= 14 + 7 and cols.max() >= 13 - 7
    # A stroke of length 12 at a uniform angle: some are near-horizontal (a crossbar across the "1").
    horizontal = [(out[i, 0] > 0.5).sum(0).gt(0).sum() >= 10 for i in range(len(out))]
    assert 0.05 < sum(horizontal) / len(out) < 0.6
    # p is a probability per image; p = 0 is the identity; a blank image gets its stroke at the centre.
    half = random_stroke(x, 0.5, generator=torch.Generator().manual_seed(1))
    assert 0.3 < (half > x).flatten(1).any(1).float().mean() < 0.6
    assert random_stroke(x, 0.0) is x
    blank = random_stroke(torch.zeros(3, 1, 28, 28), 1.0, generator=torch.Generator().manual_seed(0))
    assert (blank[:, 0, 14, 14] == 1).all()
    again = random_stroke(x, 1.0, length=(6.0, 12.0), width=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
