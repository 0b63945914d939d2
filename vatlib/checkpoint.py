"""Checkpoints: one plain dict, written atomically, read back with ``weights_only=True``.

A checkpoint holds everything needed to trust and reproduce its numbers: the weights, the
architecture spec, the training config as plain types, the labelled (and validation) indices,
the step, validation and test accuracy, and the library versions that produced it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import platform
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Optional, Union

import torch
from torch import nn

from ._version import __version__
from .model import build_model, model_spec

__all__ = ["CheckpointError", "FORMAT", "SaveError", "cpu_state_dict", "library_versions", "load_checkpoint",
           "load_model", "model_from_checkpoint", "save_checkpoint", "write_json"]

FORMAT = "vatlib-checkpoint-v2"
# Checkpoints of earlier formats, and the version of vatlib that reads them.
EARLIER_FORMATS = {"vatlib-checkpoint-v1": "vatlib 1.0 (git checkout v1.0.0, the tag of commit fb5cddf)"}
PathLike = Union[str, Path]
REQUIRED_KEYS = ("format", "model", "state_dict", "config", "labelled_indices", "step", "val_acc", "test_acc", "versions")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, unsafe, or does not fit the model it describes."""


class SaveError(CheckpointError):
    """A file could not be written (disk full, no permission, ...); its previous version is unchanged."""


def library_versions() -> Dict[str, str]:
    import numpy
    import torchvision

    # str(): torch.__version__ is a TorchVersion object, which weights_only loading rightly refuses.
    return {"vatlib": str(__version__), "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "numpy": str(numpy.__version__), "python": platform.python_version()}


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary file in the same folder, fsync it, then rename it over ``path``.

    A crash or kill at any moment leaves either the old file or the new one, never a mix:
    ``os.replace`` is atomic on POSIX and Windows when both paths are on one file system.

    Raises:
        SaveError: the file could not be written (e.g. the disk is full), naming it and the cause;
            the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions of a new file
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            before = "left unchanged" if path.exists() else "not created"
            raise SaveError(f"cannot write {path}: {e.strerror or e} ({path.name} {before})") from None
        raise


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`.

    Serialised in memory first (a checkpoint is a few MB at most), so a failing disk shows up as the
    plain ``OSError`` of a file write rather than an error from inside torch's zip writer.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON through :func:`atomic_write` (same fsync-and-rename care)."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


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
    # Random or damaged bytes reach the legacy unpickler, which fails in many ways (IndexError: pop from
    # an empty stack, KeyError: an unknown memo slot, ...): every one of them means "not a checkpoint".
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first}") from None
    found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
    if found in EARLIER_FORMATS:
        version = ckpt.get("versions", {}).get("vatlib", "?") if isinstance(ckpt.get("versions"), dict) else "?"
        raise CheckpointError(f"{path}: written by vatlib {version} in the format {found!r}, which vatlib {__version__} "
                              f"does not read; {EARLIER_FORMATS[found]} loads it")
    if found != FORMAT:
        raise CheckpointError(f"{path}: not a vatlib checkpoint (format {found!r}, expected {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing field(s) {missing}")
    resume = ckpt.get("resume") if isinstance(ckpt.get("resume"), dict) else {}
    for where, weights in (("state_dict", ckpt["state_dict"]), ("resume.model_state", resume.get("model_state")),
                           ("resume.ema_state", resume.get("ema_state"))):
        _check_finite(path, where, weights)
    return ckpt


def _check_finite(path: Path, where: str, weights: Any) -> None:
    """Raise a CheckpointError naming the first tensor of ``weights`` (a state dict) that holds NaN or inf."""
    if not isinstance(weights, dict):
        return
    for name, t in weights.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{path}: tensor {name!r} of {where} holds {bad} non-finite value(s) (NaN or inf) "
                                  f"out of {t.numel()}; these weights cannot be used (the run that wrote them diverged, "
                                  f"or the file was altered)")


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu", model: Optional[nn.Module] = None) -> nn.Module:
    """Rebuild the model a checkpoint describes, load its weights, and return it in eval mode.

    ``model``: the module to load the weights into; needed for a model of your own (its checkpoint names its
    class), optional for vatlib's own, which the checkpoint describes.

    Example::

        model = load_model("best_model.pth")
        logits = model(images)  # images (N, 1, 28, 28) in [0, 1] -> logits (N, 10)
        mine = load_model("runs/mine/best.pth", model=MyNet())  # a model of your own
    """
    return model_from_checkpoint(load_checkpoint(path), path, model).to(device)


def model_from_checkpoint(ckpt: Dict[str, Any], source: PathLike = "checkpoint",
                          model: Optional[nn.Module] = None) -> nn.Module:
    """The model (eval mode, on the CPU unless ``model`` is elsewhere) that an already loaded checkpoint dict
    describes, or ``model`` with the checkpoint's weights.

    ``source`` names the file in error messages. Use it to read a file once and get both the
    metadata and the model: ``ckpt = load_checkpoint(p); model = model_from_checkpoint(ckpt, p)``.
    """
    path, spec = source, dict(ckpt["model"])
    if model is None:
        if spec.get("name") == "custom":
            short = spec.get("class", "?").rsplit(".", 1)[-1]
            raise CheckpointError(f"{path}: holds the weights of a model of your own (class {spec.get('class')}); "
                                  f"build one and pass it: load_model(path, model={short}(...))")
        try:
            model = build_model(spec.pop("name"), **spec)
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"{path}: cannot build the model it describes ({ckpt['model']}): {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise CheckpointError(f"{path}: weights do not fit the architecture {ckpt['model']}: {detail}") from None
    return model.eval()
