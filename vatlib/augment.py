"""The views training sees: random shifts, rotations and zooms, and a random extra stroke.

Every function takes its random numbers from the ``generator`` it is given (on the CPU, or on the
GPU with a generator there), so a run's views are fixed by its seed, and works on a whole batch at
once (one gather or one ``grid_sample``), so a view costs about as much as a copy of the batch.
Shifts, rotations and zooms work on images of any size and any number of channels C, moving all
channels of an image alike; the stroke is pen ink, for single-channel images only.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .data import to_float

__all__ = ["random_affine", "random_stroke", "random_translate", "view"]


def view(images: torch.Tensor, shift: int, rotate: float, scale: float,
         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, C, H, W) -> a random view, float (N, C, H, W) in [0, 1].

    Integer shifts when there is no rotation or zoom (exact pixels, no interpolation blur), else a
    bilinear affine map (``random_affine``).
    """
    if rotate > 0 or scale > 0:
        return random_affine(images, shift, rotate, scale, generator)
    return to_float(random_translate(images, shift, generator))


def random_translate(images: torch.Tensor, max_shift: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Shift each image (N, H, W) or (N, C, H, W) by its own random integer offset in [-max_shift, max_shift]^2,
    zero fill; every channel of an image moves alike.

    Vectorised with one gather, so it costs about as much as a copy of the batch.
    """
    if max_shift == 0:
        return images
    n, (h, w) = images.shape[0], images.shape[-2:]
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)  # (N, [C,] H+2s, W+2s)
    # Offsets are drawn where the generator lives (the CPU, or the GPU with a generator there), then moved.
    where = generator.device if generator is not None else images.device
    shifts = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=generator, device=where).to(images.device)
    rows = (shifts[0] + torch.arange(h, device=images.device))[:, :, None]  # (N, H, 1)
    cols = (shifts[1] + torch.arange(w, device=images.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=images.device)[:, None, None]  # (N, 1, 1)
    if images.dim() == 3:
        return padded[batch, rows, cols]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]  # (1, C, 1, 1)
    return padded[batch[:, None], channels, rows[:, None], cols[:, None]]


def random_stroke(x: torch.Tensor, p: float, length: Tuple[float, float] = (6.0, 12.0), width: float = 2.0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw, with probability ``p`` per image (N, 1, H, W) in [0, 1], one straight stroke through the digit.

    The stroke is centred on a random ink pixel (value > 0.5; the image centre if there is none), at a
    uniform angle, ``length`` pixels long (uniform in the range) and ``width`` pixels wide, with
    antialiased edges; it is added as ink (the pixel-wise maximum), so the digit underneath stays.
    It stands for the extra strokes handwriting varies by (a crossbar, a serif, a flick): the class
    of a labelled image is taken to survive one. Returns a new tensor; ``p=0`` returns ``x`` itself.

    Raises:
        ValueError: the images have more than one channel (ink is drawn on single-channel images only).
    """
    if p == 0:
        return x
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"random_stroke draws pen ink on single-channel images (N, 1, H, W), got {tuple(x.shape)}; "
                         "for images of several channels train with stroke_p=0")
    n, _, h, w = x.shape
    where = generator.device if generator is not None else x.device
    ink = (x.flatten(1) > 0.5).float().to(where)  # (N, H*W)
    ink[:, (h // 2) * w + w // 2] += ink.sum(1) == 0  # a blank image: the centre (no boolean index: no GPU sync)
    centre = torch.multinomial(ink, 1, generator=generator).squeeze(1).to(x.device)  # (N,)
    u = torch.rand(3, n, generator=generator, device=where).to(x.device)
    angle = u[0] * torch.pi
    half = (length[0] + u[1] * (length[1] - length[0])) / 2  # (N,)
    cy, cx = (centre // w).float(), (centre % w).float()
    dy, dx = torch.sin(angle), torch.cos(angle)
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1) - cy.view(n, 1, 1)  # (N, H, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w) - cx.view(n, 1, 1)  # (N, 1, W)
    along = (rows * dy.view(n, 1, 1) + cols * dx.view(n, 1, 1)).clamp(-half.view(n, 1, 1), half.view(n, 1, 1))
    dist = torch.sqrt((rows - along * dy.view(n, 1, 1)) ** 2 + (cols - along * dx.view(n, 1, 1)) ** 2)  # (N, H, W)
    stroke = (width / 2 + 0.5 - dist).clamp(0, 1) * (u[2] < p).view(n, 1, 1)  # 1 inside, a 1-px ramp at the edge
    return torch.maximum(x, stroke[:, None].to(x.dtype))


def random_affine(images: torch.Tensor, max_shift: float, max_rotate: float, max_scale: float,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-sample random rotation, scaling and translation of uint8 images (N, H, W) or (N, C, H, W) -> float
    (N, C, H, W) in [0, 1].

    Angles are uniform in [-max_rotate, max_rotate] degrees, scales in [1 - max_scale, 1 + max_scale],
    shifts in [-max_shift, max_shift] pixels; bilinear sampling, zero fill. One ``grid_sample`` for
    the whole batch, so it costs well under a millisecond for a training batch.
    """
    n, (h, w) = images.shape[0], images.shape[-2:]
    where = generator.device if generator is not None else images.device
    u = torch.rand(4, n, generator=generator, device=where).mul_(2).sub_(1).to(images.device)  # uniform in [-1, 1]
    angle = u[0] * (max_rotate * torch.pi / 180)
    scale = 1 + u[1] * max_scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # theta maps output coordinates to input coordinates, in [-1, 1] units (2 / size per pixel):
    # in = L @ out + t. For an output shift of exactly s, t = -L @ s.
    linear = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (N, 2, 2)
    shift = torch.stack([u[2] * max_shift * 2 / w, u[3] * max_shift * 2 / h], 1)  # (N, 2), (x, y)
    theta = torch.cat([linear, -(linear @ shift[:, :, None])], 2)  # (N, 2, 3)
    x = to_float(images)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
