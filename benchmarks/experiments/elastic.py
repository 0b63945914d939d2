"""An experiment: the pseudo-labels' strong view also elastically distorted (Simard et al. 2003), as a term.

    python benchmarks/screen.py '{"elastic": {"pseudo_weight": 0.0, "term_weights": {"pseudo_elastic": 1.0}}}' \\
        --experiment benchmarks/experiments/elastic.py --draws 3,8

The default's remaining mistakes are pairs of classes that trade images both ways (1 and 2, 4 and 9, 7 and 1;
docs/EXPERIMENTS.md, 2026-12-03): shapes one local bend of a stroke apart. The strong view (rotation, zoom, shift)
moves the whole digit rigidly; an elastic distortion bends the strokes themselves, the variation handwriting has and
the one that made elastic distortions the strongest MNIST augmentation for supervised CNNs. The term is the
default's pseudo-label term (same thresholds, same clean-prediction targets) on the strong view distorted by a
random displacement field: uniform noise in [-1, 1] per pixel, smoothed by a Gaussian of ``SIGMA`` pixels, scaled
by ``ALPHA`` pixels. Run it with ``pseudo_weight=0`` (it takes the built-in term's place).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

import vatlib
from vatlib.terms import pseudo_label_loss

ALPHA, SIGMA = 34.0, 4.0  # Simard et al.'s MNIST setting: about 1.4 pixels of displacement, smooth over ~4 pixels


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of radius 2 sigma."""
    radius = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def elastic(x: torch.Tensor, alpha: float = ALPHA, sigma: float = SIGMA,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Each image of ``x`` (N, 1, H, W) warped by its own smooth random displacement field (bilinear, zero fill).

    Example:
        >>> x = torch.rand(4, 1, 28, 28)
        >>> bool(torch.allclose(elastic(x, alpha=0.0), x, atol=1e-5))  # no displacement: the same images
        True
        >>> y = elastic(x, generator=torch.Generator().manual_seed(0))
        >>> y.shape == x.shape, bool((y - x).abs().mean() > 0.01)
        (True, True)
    """
    n, _, h, w = x.shape
    where = generator.device if generator is not None else x.device
    field = torch.rand(n, 2, h, w, generator=generator, device=where).to(x.device).mul_(2).sub_(1)  # (N, 2, H, W)
    k = gaussian_kernel(sigma).to(x.device, x.dtype)
    pad = len(k) // 2
    field = F.conv2d(F.pad(field, (pad, pad, 0, 0), mode="reflect" if pad < w else "replicate"),
                     k.view(1, 1, 1, -1).expand(2, 1, 1, -1), groups=2)  # smooth along rows
    field = F.conv2d(F.pad(field, (0, 0, pad, pad), mode="reflect" if pad < h else "replicate"),
                     k.view(1, 1, -1, 1).expand(2, 1, -1, 1), groups=2)  # then along columns
    field = field * alpha  # (N, 2, H, W) in pixels: (dx, dy)
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype),
                            torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij")
    gx = (xs + field[:, 0] + 0.5) * (2 / w) - 1  # pixel centres to [-1, 1] (align_corners=False)
    gy = (ys + field[:, 1] + 0.5) * (2 / h) - 1
    grid = torch.stack([gx, gy], dim=3)  # (N, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def elastic_pseudo_term(run, u) -> torch.Tensor:
    strong, _ = run.views(run.unlabelled[u.pos], strong=True)
    strong = elastic(strong, generator=run.gen).contiguous(memory_format=run.memory_format)
    return pseudo_label_loss(run, u.pos, u.logits.detach().float().softmax(dim=1), strong=strong)


vatlib.register_term("pseudo_elastic", elastic_pseudo_term, clean_grad=False)
