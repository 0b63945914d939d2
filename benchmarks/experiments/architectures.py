"""Candidate models for a higher ceiling: each registered by name, for the screens to train on all labels first.

    python benchmarks/screen.py '{"m5-half": {"model": "m5-half"}, "w32": {"width": 32}}' --preset supervised \
        --base '{"all_labels": true, "batch_labelled": 128, "n_validation": 10000}' \
        --experiment benchmarks/experiments/architectures.py --draws 0-0
    python benchmarks/benchmark.py step --experiment benchmarks/experiments/architectures.py \
        --models m5-half,m5-quarter,cnn5x5,resnet

The default's ConvNet reaches 99.44 % on all labels; small CNNs reach 99.7 % there (An et al. 2020, "M5": a stack of
5x5 convolutions with BatchNorm and no pooling, about 25x this CNN's multiply-adds). The ceiling screen trains each
candidate on every label with a 10,000-image held-out set (enough to tell 99.5 from 99.6 %), and the step benchmark
gives the cost of its semi-supervised step; the two or three best go on to the semi-supervised recipe. Width and
depth of vatlib's own ConvNet are TrainConfig fields (``width``, ``final_blocks``); what it cannot express is here:

- ``m5-half``, ``m5-quarter``: M5 at half / a quarter of its widths (16-32-48-64-80 / 8-16-24-32-40 channels, five
  5x5 convolutions without padding, 28 -> 8 pixels, a linear head on the flattened map): about 6x / 1.6x the
  default CNN's multiply-adds;
- ``cnn5x5``: the default CNN's layout with 5x5 kernels (2.8x);
- ``resnet``: three stages of two residual blocks (16, 32, 64 channels at 28, 14, 7 pixels), global average
  pooling (about 4x).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

import vatlib
from vatlib.model import PIXEL_MEAN, PIXEL_STD


def conv_bn(c_in: int, c_out: int, kernel: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class Normalised(nn.Module):
    """Images (N, C, H, W) in [0, 1] -> MNIST-normalised -> ``body`` -> logits, as vatlib's own models take them."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.pixel_mean) / self.pixel_std)


def m5(num_classes: int, shape: Tuple[int, int, int], widths: Sequence[int]) -> nn.Module:
    """Five 5x5 convolutions without padding (H -> H - 20), BatchNorm and ReLU each, a linear head on the map."""
    layers, c = [], shape[0]
    for w in widths:
        layers.append(conv_bn(c, w, 5, 0))
        c = w
    side = (shape[1] - 4 * len(widths)) * (shape[2] - 4 * len(widths))
    return Normalised(nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * side, num_classes)))


def cnn5x5(num_classes: int, shape: Tuple[int, int, int], w: int = 16) -> nn.Module:
    """vatlib's default ConvNet layout (w @28, pool, 2w x2 @14, pool, 4w x2 @7, GAP) with 5x5 kernels."""
    return Normalised(nn.Sequential(
        conv_bn(shape[0], w, 5, 2), nn.MaxPool2d(2), conv_bn(w, 2 * w, 5, 2), conv_bn(2 * w, 2 * w, 5, 2),
        nn.MaxPool2d(2), conv_bn(2 * w, 4 * w, 5, 2), conv_bn(4 * w, 4 * w, 5, 2), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4 * w, num_classes)))


class Residual(nn.Module):
    """x + (conv-BN-ReLU-conv-BN)(x), then ReLU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.f = nn.Sequential(conv_bn(c, c, 3, 1), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.f(x))


def resnet(num_classes: int, shape: Tuple[int, int, int], w: int = 16) -> nn.Module:
    """A 3x3 stem, then two residual blocks at each of 28, 14 and 7 pixels (w, 2w, 4w channels), GAP, a head."""
    return Normalised(nn.Sequential(
        conv_bn(shape[0], w, 3, 1), Residual(w), Residual(w), nn.MaxPool2d(2),
        conv_bn(w, 2 * w, 3, 1), Residual(2 * w), Residual(2 * w), nn.MaxPool2d(2),
        conv_bn(2 * w, 4 * w, 3, 1), Residual(4 * w), Residual(4 * w),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes)))


vatlib.register_model("m5-half", lambda k, shape: m5(k, shape, (16, 32, 48, 64, 80)))
vatlib.register_model("m5-quarter", lambda k, shape: m5(k, shape, (8, 16, 24, 32, 40)))
vatlib.register_model("cnn5x5", cnn5x5)
vatlib.register_model("resnet", resnet)
