"""MNIST-family data held in memory as uint8 tensors, verified before use, and the labelled split.

Files are read from torchvision's layout, ``<root>/<name>/raw/<file>[.gz]``, so a folder made by
``torchvision.datasets.MNIST(root, download=True)`` works as is. Every file is checked for
structure (IDX magic number, dimensions, length, label range) and for content: the SHA-256 of
the decompressed IDX bytes, recorded for MNIST and FashionMNIST, decides, so any container of
the genuine data loads (the published archive, a recompressed one, a decompressed file) and any
change of the data is refused. The published archive digests are only a fast path, and for
KMNIST, whose decompressed digests are not recorded here, the archive MD5 is the check.

Data of your own: ``ImageData.from_arrays(...)`` (uint8 images (N, H, W) or (N, C, H, W) of any size,
and integer labels, as tensors or numpy arrays) gives the same object ``load_dataset`` returns.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "DataError",
    "ImageData",
    "Split",
    "load_dataset",
    "sample_labelled",
    "split_train",
    "to_float",
]

DATASETS = ("MNIST", "FashionMNIST", "KMNIST")
PathLike = Union[str, Path]

# (images file, labels file) per split; the same names for every member of the family.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of the decompressed IDX files: the check that decides. MNIST: the files shipped under
# data/MNIST/raw. FashionMNIST: computed from Debian's dataset-fashion-mnist package, whose
# decompressed files match the published MD5s of the raw files (train-images f4a8712d..., train-labels
# 9018921c..., t10k-images 8181f547..., t10k-labels 15d48437...).
CONTENT_SHA256 = {
    "MNIST": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
# SHA-256 of the MNIST archives shipped here; for the others, torchvision's MD5 of the archives it downloads.
MNIST_ARCHIVE_SHA256 = {
    "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
    "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
}

IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049  # 0x0803: uint8, 3 dims; 0x0801: uint8, 1 dim
NUM_CLASSES = 10


class DataError(RuntimeError):
    """A data file is missing, corrupt, truncated or not what it claims to be."""


class ImageData(NamedTuple):
    """A dataset in memory: uint8 images (N, H, W) (one channel, as MNIST is loaded) or (N, C, H, W), labels int64
    (N,) in 0..K-1, and where it came from.

    Data of your own, as tensors or numpy arrays::

        data = ImageData.from_arrays(train_images, train_labels, test_images, test_labels, name="my-digits")
        vatlib.train(vatlib.TrainConfig(out="runs/mine"), data=data)
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str = ""  # where the data came from (folder and check, or "arrays"), recorded in checkpoints

    @classmethod
    def from_arrays(cls, train_images: Any, train_labels: Any, test_images: Any, test_labels: Any, *,
                    name: str = "arrays") -> "ImageData":
        """Checked ``ImageData`` from uint8 images (N, H, W) or (N, C, H, W) and integer labels (N,), tensors or numpy
        arrays. Train and test images must have the same shape per image.

        Raises:
            ValueError / TypeError: naming the array, what it is and what is allowed.

        Example:
            >>> images, labels = torch.zeros(20, 28, 28, dtype=torch.uint8), torch.arange(20) % 2
            >>> data = ImageData.from_arrays(images, labels, images[:4], labels[:4], name="toy")
            >>> data.train_images.shape, data.train_labels.dtype, data.source
            (torch.Size([20, 28, 28]), torch.int64, 'arrays')
        """
        arrays = {"train_images": train_images, "train_labels": train_labels, "test_images": test_images,
                  "test_labels": test_labels}
        out = {}
        for field, value in arrays.items():
            t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value).cpu()
            if field.endswith("images"):
                if t.dtype != torch.uint8:
                    raise TypeError(f"{field} must be uint8 pixels 0-255, got dtype {t.dtype} "
                                    f"(images in [0, 1]? use (x * 255).round().to(torch.uint8))")
                if t.dim() not in (3, 4) or min(t.shape[1:]) < 1:
                    raise ValueError(f"{field} must have shape (N, H, W) or (N, C, H, W), got {tuple(t.shape)}")
                if t.dim() == 4 and t.shape[3] in (1, 3, 4) and t.shape[1] > 4:
                    raise ValueError(f"{field} has shape {tuple(t.shape)}, channels last (N, H, W, C) by the look of "
                                     f"it; allowed: (N, C, H, W) (images.permute(0, 3, 1, 2)) or (N, H, W)")
            else:
                if t.dtype.is_floating_point or t.dtype == torch.bool or t.dim() != 1:
                    raise TypeError(f"{field} must be a 1-D array of integer class indices, got {t.dtype} "
                                    f"of shape {tuple(t.shape)}")
                t = t.to(torch.int64)
                if len(t) and int(t.min()) < 0:
                    raise ValueError(f"{field} holds {int(t.min())}; allowed: class indices 0..C-1")
            out[field] = t.contiguous()
        for split in ("train", "test"):
            n_img, n_lbl = len(out[f"{split}_images"]), len(out[f"{split}_labels"])
            if n_img != n_lbl:
                raise ValueError(f"{split}_images has {n_img} images but {split}_labels has {n_lbl} labels")
        if out["train_images"].shape[1:] != out["test_images"].shape[1:]:
            raise ValueError(f"train_images are {tuple(out['train_images'].shape[1:])} per image but test_images are "
                             f"{tuple(out['test_images'].shape[1:])}; allowed: the same shape for both")
        n_classes = int(out["train_labels"].max()) + 1 if len(out["train_labels"]) else 0
        if n_classes < 2:
            raise ValueError(f"train_labels must name at least 2 classes, found {n_classes}")
        # Classes numbered 1..10 would otherwise make an eleventh, empty class 0 that the model learns to never predict.
        missing = (torch.bincount(out["train_labels"], minlength=n_classes) == 0).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"train_labels must use every class 0..{n_classes - 1}, but class(es) {missing} have no "
                             f"image; number the classes from 0 without gaps (labels 1..C: subtract 1)")
        if len(out["test_labels"]) and int(out["test_labels"].max()) >= n_classes:
            raise ValueError(f"test_labels holds class {int(out['test_labels'].max())}, but the training labels "
                             f"only go up to {n_classes - 1}")
        return cls(name, **out, source="arrays")

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        """(C, H, W) of one image as the models see it: (1, 28, 28) for MNIST."""
        return tuple(as_nchw(self.train_images).shape[1:])  # type: ignore[return-value]

    def fingerprint(self) -> Dict[str, Any]:
        """What a run records about its data: name, source, sizes and a SHA-256 of the tensors' bytes."""
        h = hashlib.sha256()
        for t in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            h.update(t.contiguous().numpy())  # hashed in place, without a copy of the bytes
        return {"name": self.name, "source": self.source, "train": len(self.train_labels),
                "test": len(self.test_labels), "classes": int(self.train_labels.max()) + 1, "sha256": h.hexdigest()}


class Split(NamedTuple):
    """Disjoint indices into the training set: labelled, unlabelled and validation (int64, sorted)."""

    labelled: torch.Tensor
    unlabelled: torch.Tensor
    validation: torch.Tensor


def _archive_digests(name: str) -> Dict[str, Tuple[str, str]]:
    """archive file name -> (algorithm, hex digest) of the published archives: the fast path."""
    if name == "MNIST":
        return {f: ("sha256", h) for f, h in MNIST_ARCHIVE_SHA256.items()}
    import torchvision.datasets as tvd  # torchvision publishes the MD5 of each archive

    return {f: ("md5", h) for f, h in getattr(tvd, name).resources}


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_bytes(path: Path, fix: str) -> bytes:
    """The IDX bytes of ``path``, decompressed if it is gzipped."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"{path}: cannot be read or decompressed ({e}) (file corrupt or truncated). {fix}") from None


def _verify(name: str, stem: str, path: Path, fix: str) -> Tuple[bytes, str]:
    """Read ``path`` and check it is the genuine ``name`` file; returns its IDX bytes and how it was checked.

    A published archive, byte for byte, is accepted on its digest (fast). Otherwise the SHA-256 of the
    decompressed bytes must be the recorded one, whatever the container.
    """
    archive = _archive_digests(name).get(path.name)
    found_archive = _digest(path, archive[0]) if archive is not None else None
    if archive is not None and found_archive == archive[1]:
        return _read_bytes(path, fix), f"published archive {archive[0].upper()}"
    expected = CONTENT_SHA256.get(name, {}).get(stem)
    if expected is None:
        if archive is None:  # e.g. a decompressed KMNIST file: no digest of it is recorded
            return _read_bytes(path, fix), "structure only (no digest recorded for this form of the file)"
        raise DataError(f"{path}: {archive[0].upper()} is {found_archive}, not that of the published "
                        f"{name} archive, and no digest of the decompressed {name} data is recorded here to check "
                        f"another container against (file corrupt, recompressed, or from another dataset). {fix} "
                        f"To use it unchecked: load_dataset(..., verify=False).")
    try:
        data = _read_bytes(path, fix)
    except DataError as e:
        raise DataError(f"{e} (its SHA256 could not be checked)") from None
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise DataError(f"{path}: SHA256 of the decompressed data is {found}, expected {expected} for {name} "
                        f"(file corrupt, truncated or from another dataset). {fix}")
    return data, "SHA-256 of the decompressed data"


def _find(raw: Path, stem: str) -> Optional[Path]:
    """Prefer the decompressed file (torchvision extracts next to the archive), else the .gz."""
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _parse_idx(data: bytes, path: Path, magic: int, fix: str) -> np.ndarray:
    """Parse IDX bytes into a uint8 array, checking the header and the length."""
    n_dims = magic & 0xFF
    header = 4 + 4 * n_dims
    if len(data) < header:
        raise DataError(f"{path}: only {len(data)} bytes, too short for an IDX header. {fix}")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: IDX magic number is {found}, expected {magic}; not an MNIST-format "
                        f"{'image' if magic == IDX_IMAGES_MAGIC else 'label'} file. {fix}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(n_dims)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes but its header {dims} needs {expected} "
                        f"(file truncated or padded). {fix}")
    if n_dims == 3 and dims[1:] != [28, 28]:
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28. {fix}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _download(name: str, root: Path, raw: Path) -> None:
    import torchvision.datasets as tvd

    try:
        for train in (True, False):
            getattr(tvd, name)(str(root), train=train, download=True)
    except Exception as e:  # network errors come in many types (URLError, socket errors, HTTP errors)
        raise DataError(
            f"{name} files not found in {raw} and the download failed ({type(e).__name__}: {' '.join(str(e).split())}). "
            f"Put the four files {', '.join(s + '.gz' for pair in FILES.values() for s in pair)} in {raw}, "
            f"or run once on a machine with network access."
        ) from None


def load_dataset(name: str = "MNIST", root: PathLike = "data", *, download: bool = True,
                 verify: bool = True) -> ImageData:
    """Load one of torchvision's MNIST family from ``<root>/<name>/raw/`` into memory.

    Args:
        name: "MNIST", "FashionMNIST" or "KMNIST".
        root: folder holding ``<name>/raw/`` in torchvision's layout; files may be gzipped or not.
        download: when files are missing, fetch them with torchvision (needs a network).
        verify: check file digests against the reference ones (structure is always checked).
            Turn off only for IDX files of your own.

    Returns:
        ImageData with train/test images uint8 (N, 28, 28) and labels int64 (N,).

    Raises:
        ValueError: unknown ``name``.
        DataError: a file is missing (and could not be downloaded), corrupt, truncated, or fails
            its digest; the message names the file, the failed check and what to do.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    root = Path(root)
    raw = root / name / "raw"
    stems = [s for pair in FILES.values() for s in pair]
    if any(_find(raw, s) is None for s in stems):
        if not download:
            missing = [s for s in stems if _find(raw, s) is None]
            raise DataError(f"{name} files missing in {raw}: {', '.join(missing)} (.gz or decompressed). "
                            f"Copy them there, or pass download=True on a machine with network access.")
        _download(name, root, raw)

    arrays, checks = {}, set()
    for stem in stems:
        path = _find(raw, stem)
        fix = f"Delete {path} and copy a good {name} file there (or let torchvision download it)."
        data, check = _verify(name, stem, path, fix) if verify else (_read_bytes(path, fix), "structure only")
        checks.add(check)
        magic = IDX_IMAGES_MAGIC if "images" in stem else IDX_LABELS_MAGIC
        arrays[stem] = _parse_idx(data, path, magic, fix)

    out = {}
    for split, (img_stem, lbl_stem) in FILES.items():
        images, labels = arrays[img_stem], arrays[lbl_stem]
        if len(images) != len(labels):
            raise DataError(f"{raw}: {img_stem} has {len(images)} images but {lbl_stem} has "
                            f"{len(labels)} labels. Replace the mismatched file.")
        if labels.size and labels.max() >= NUM_CLASSES:
            raise DataError(f"{_find(raw, lbl_stem)}: label {int(labels.max())} outside 0..{NUM_CLASSES - 1}. "
                            f"Replace the file.")
        # np.frombuffer views are read-only; copy into tensors we own.
        out[split] = (torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))
    return ImageData(name, *out["train"], *out["test"], source=f"{raw} ({'; '.join(sorted(checks))})")


def sample_labelled(labels: torch.Tensor, per_class: int = 10, seed: int = 0) -> torch.Tensor:
    """Class-balanced labelled indices: ``per_class`` of each class, drawn by ``seed``, sorted.

    Deterministic: the same labels, per_class and seed give the same indices on any machine
    (a seeded CPU ``torch.Generator`` draws a permutation per class).

    Example:
        >>> labels = torch.arange(10).repeat(5)  # 5 of each class
        >>> idx = sample_labelled(labels, per_class=2, seed=0)
        >>> len(idx), torch.bincount(labels[idx]).tolist()
        (20, [2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    classes, counts = torch.unique(labels, return_counts=True)
    if per_class > counts.min():
        c, n = int(classes[counts.argmin()]), int(counts.min())
        raise ValueError(f"per_class={per_class} is too large: class {c} has only {n} examples; allowed: 1..{n}")
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes.tolist():
        pool = torch.nonzero(labels == c).flatten()
        chosen.append(pool[torch.randperm(len(pool), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values


def split_train(labels: torch.Tensor, per_class: int = 10, n_validation: int = 1000, seed: int = 0) -> Split:
    """Partition the training set into labelled / unlabelled / validation indices (disjoint).

    The labelled set is class-balanced (``sample_labelled``); the validation set is a uniform
    random draw of ``n_validation`` from the rest, used only to choose checkpoints; everything
    else is unlabelled. The test set is never part of this.
    """
    labelled = sample_labelled(labels, per_class, seed)
    rest_mask = torch.ones(len(labels), dtype=torch.bool)
    rest_mask[labelled] = False
    rest = torch.nonzero(rest_mask).flatten()
    if not 0 <= n_validation <= len(rest):
        raise ValueError(f"n_validation={n_validation} is invalid; allowed: n_validation must be in [0, {len(rest)}] "
                         f"(the training examples left after the labelled draw)")
    gen = torch.Generator().manual_seed(seed + 1_000_003)  # independent of the labelled draw
    perm = rest[torch.randperm(len(rest), generator=gen)]
    return Split(labelled, perm[n_validation:].sort().values, perm[:n_validation].sort().values)


def as_nchw(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, 1, H, W), a view; (N, C, H, W) as it is."""
    if images.dim() == 3:
        return images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W), got {tuple(images.shape)}")
    return images


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1] (C = 1 for (N, H, W))."""
    return as_nchw(images).float().div_(255.0)
