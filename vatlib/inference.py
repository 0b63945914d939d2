"""Where a model runs, and what it predicts: ``resolve_device``, ``predict``, ``evaluate``."""

from __future__ import annotations

import torch
from torch import nn

from .data import to_float

__all__ = ["evaluate", "predict", "resolve_device"]


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu; anything else must name a usable torch device."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not a torch device ({e}); allowed: auto, cpu, cuda[:N], mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps}
    if not available.get(dev.type, False):
        raise ValueError(f"device={device!r} is not available on this machine; allowed: auto, cpu"
                         + "".join(f", {k}" for k, ok in available.items() if ok and k != "cpu"))
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes (N,) for uint8 images (N, H, W) or (N, C, H, W), or float images (N, C, H, W) in [0, 1].

    ``model`` is any module that maps float images (N, C, H, W) to logits; a vatlib model checks the images first.
    """
    if images.dtype != torch.uint8 and hasattr(model, "check_input"):
        model.check_input(images[:1].to(next(model.parameters())))  # dtype, shape; the range of one image
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    preds = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        x = to_float(batch) if batch.dtype == torch.uint8 else batch
        if x.dim() == 4:  # oneDNN's fast layout; a model in the other layout converts it in its first conv
            x = x.contiguous(memory_format=torch.channels_last)
        preds.append(model(x).argmax(dim=1).cpu())
    model.train(was_training)
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Accuracy in [0, 1] of ``model`` on images (as ``predict`` takes them) with labels (N,)."""
    if len(images) == 0:
        return float("nan")
    return (predict(model, images, batch_size) == labels.cpu()).float().mean().item()
