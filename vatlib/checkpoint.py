"""Checkpoints: one plain dict, written atomically, read back with ``weights_only=True``.

A checkpoint holds everything needed to trust and reproduce its numbers: the weights, the
architecture spec, the training config as plain types, the labelled (and validation) indices,
the step, validation and test accuracy, and the library versions that produced it.
"""

from __future__ import annotations

import os
import pickle
import platform
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Union

import torch
from torch import nn

from .model import build_model, model_spec

__all__ = ["CheckpointError", "FORMAT", "cpu_state_dict", "library_versions", "load_checkpoint", "load_model", "save_checkpoint"]

FORMAT = "vatlib-checkpoint-v1"
PathLike = Union[str, Path]
REQUIRED_KEYS = ("format", "model", "state_dict", "config", "labelled_indices", "step", "val_acc", "test_acc", "versions")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, unsafe, or does not fit the model it describes."""


def library_versions() -> Dict[str, str]:
    import numpy
    import torchvision

    from . import __version__

    # str(): torch.__version__ is a TorchVersion object, which weights_only loading rightly refuses.
    return {"vatlib": str(__version__), "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "numpy": str(numpy.__version__), "python": platform.python_version()}


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or kill at any moment leaves either the old file or the new one, never a mix:
    ``os.replace`` is atomic on POSIX and Windows when both paths are on one file system.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions of a new file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cpu_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """A detached CPU copy of ``model.state_dict()``, safe to save while training goes on."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_checkpoint(path: PathLike, model: nn.Module, *, config: Dict[str, Any], labelled_indices: torch.Tensor,
                    step: int, val_acc: float, test_acc: float, **extra: Any) -> None:
    """Write the checkpoint dict for ``model`` atomically (see ``atomic_torch_save``).

    ``extra`` holds further plain-typed entries (validation indices, history, ...).
    """
    ckpt = {
        "format": FORMAT,
        "model": model_spec(model),
        "state_dict": cpu_state_dict(model),
        "config": dict(config),
        "labelled_indices": torch.as_tensor(labelled_indices, dtype=torch.int64).cpu(),
        "step": int(step),
        "val_acc": float(val_acc),
        "test_acc": float(test_acc),
        "versions": library_versions(),
        **extra,
    }
    atomic_torch_save(ckpt, path)


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read and check a checkpoint dict. Never unpickles anything but tensors and plain containers.

    Raises:
        CheckpointError: naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only=True refuses any pickled callable/class before running it.
        detail = next((ln.strip() for ln in str(e).splitlines() if "Unsupported" in ln), "")
        raise CheckpointError(f"{path}: refused to load: it holds pickled objects other than tensors and "
                              f"plain containers (possibly executable code), which are never run. {detail}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not a vatlib checkpoint (format {found!r}, expected {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing field(s) {missing}")
    return ckpt


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Rebuild the model a checkpoint describes, load its weights, and return it in eval mode.

    Example::

        model = load_model("best_model.pth")
        logits = model(images)  # images (N, 1, 28, 28) in [0, 1] -> logits (N, 10)
    """
    ckpt = load_checkpoint(path)
    spec = dict(ckpt["model"])
    try:
        model = build_model(spec.pop("name"), **spec)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: cannot build the model it describes ({ckpt['model']}): {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise CheckpointError(f"{path}: weights do not fit the architecture {ckpt['model']}: {detail}") from None
    return model.to(device).eval()
