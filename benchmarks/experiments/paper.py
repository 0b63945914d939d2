"""The VAT paper's MNIST result (Miyato et al., TPAMI 2018: 1.36 % test error with 100 labels): the differences
between the `paper` preset and the authors' code, each a schedule or a model that a screen can name.

    python benchmarks/screen.py '{"hold80": {"lr_schedule": "hold80-linear", "steps": 60000}}' --preset paper \
        --experiment benchmarks/experiments/paper.py --draws 0,1 --base '{"num_threads": 1}'

Importing this file registers:

- the schedule ``hold80-linear``: Adam's rate held at its peak for the first 80 % of the updates, then decayed
  linearly to 0, with beta1 0.9 while it is held and 0.5 while it decays. This is the shape of the authors'
  TPAMI-era code (takerum/vat_tf, train_semisup.py: lr constant until epoch_decay_start, then linear to 0, mom2 = 0.5
  as beta1 from then on), at the timing of the one public MNIST run near the paper's figure (sakishinoda/tf-ssl,
  vat100: 2e-3 held for 48k of 60k updates). The preset's x0.9 per 500 updates is the ICLR 2016 code's, written for
  a shallower, noiseless network; under it the rate is below 1e-4 by step 15,000.
- models, the paper's MLP (784-1200-600-300-150-10, Gaussian noise 0.5 after each hidden layer) with one of the
  authors' choices each, named ``mlp-<what>``:
  - ``mlp-shared-noise``: one noise draw per layer for the clean and both VAT passes of a step (takerum/vat_tf#2:
    "the dropout masks in each forward pass are the same as each other"), a fresh one for the labelled pass;
  - ``mlp-bn-labelled``: BatchNorm's running statistics move with the labelled pass only (both authors' codes);
    the other passes normalise with their own batch's statistics, as before;
  - ``mlp-authors-init``: every linear layer with a bias, weights drawn from N(0, 1/fan_in) (takerum/vat,
    source/layers/linear.py), about 1.7x PyTorch's default scale;
  - ``mlp-input-noise``: Gaussian noise of std 0.3 on the input as well (Salimans et al. 2016's MNIST network,
    which the authors say they followed);
  - ``mlp-leaky``: leaky ReLU (slope 0.1) in place of ReLU, as in the closest public reproduction (tf-ssl, vat100).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import vatlib
from vatlib.model import GaussianNoise

HOLD = 0.8  # the share of the updates at the peak rate
LABELLED_BATCH = 100  # the paper preset's labelled batch: how the models tell the labelled pass from the others


def hold_then_linear(t: int, steps: int) -> float:
    """1 for the first HOLD of the updates, then linearly to 0 at the last one.

    Example:
        >>> [round(hold_then_linear(t, 100), 2) for t in (0, 80, 90, 100)]
        [1.0, 1.0, 0.5, 0.0]
    """
    start = HOLD * steps
    return 1.0 if t <= start else max(0.0, (steps - t) / (steps - start))


def beta1_after_hold(t: int, steps: int) -> float:
    return 0.9 if t < HOLD * steps else 0.5


class SharedNoise(GaussianNoise):
    """Gaussian noise drawn afresh for the labelled pass and for the first unlabelled pass after it; the later
    unlabelled passes of the same step (VAT's power iteration and perturbed pass) reuse that draw."""

    def __init__(self, std: float) -> None:
        super().__init__(std)
        self.noise: Optional[torch.Tensor] = None
        self.after_labelled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.std == 0:
            return x
        if len(x) == LABELLED_BATCH:
            self.after_labelled = True
            return x + self.std * torch.randn_like(x)
        if self.after_labelled or self.noise is None or self.noise.shape != x.shape:
            self.noise, self.after_labelled = self.std * torch.randn_like(x), False
        return x + self.noise


class LabelledStatsBatchNorm(nn.BatchNorm1d):
    """BatchNorm whose running statistics move with batches of the labelled size only; any other training batch is
    normalised with its own statistics and leaves them where they were."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and len(x) != LABELLED_BATCH:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


def paper_mlp(num_classes: int, shape: Tuple[int, int, int], *, shared_noise: bool = False, bn_labelled: bool = False,
              authors_init: bool = False, input_noise: float = 0.0, leaky: float = 0.0) -> nn.Module:
    """The paper's MLP (vatlib.MLP) with the chosen differences from the preset's."""
    model = vatlib.MLP(num_classes, in_features=shape[0] * shape[1] * shape[2])
    layers = list(model.layers)
    for i, layer in enumerate(layers):
        if leaky and isinstance(layer, nn.ReLU):
            layers[i] = nn.LeakyReLU(leaky, inplace=True)
        if shared_noise and isinstance(layer, GaussianNoise):
            layers[i] = SharedNoise(layer.std)
        if bn_labelled and isinstance(layer, nn.BatchNorm1d):
            layers[i] = LabelledStatsBatchNorm(layer.num_features)
    head = list(model.head)
    if bn_labelled:
        head[1] = LabelledStatsBatchNorm(head[1].num_features)
    if authors_init:
        for seq in (layers, head):
            for i, layer in enumerate(seq):
                if isinstance(layer, nn.Linear):
                    seq[i] = nn.Linear(layer.in_features, layer.out_features, bias=True)
                    nn.init.normal_(seq[i].weight, 0.0, math.sqrt(1.0 / layer.in_features))
                    nn.init.zeros_(seq[i].bias)
    if input_noise > 0:
        layers.insert(1, GaussianNoise(input_noise))  # after the Flatten: noise on every pixel
    model.layers, model.head = nn.Sequential(*layers), nn.Sequential(*head)
    return model


vatlib.register_schedule("hold80-linear", hold_then_linear, beta1=beta1_after_hold)
vatlib.register_model("mlp-shared-noise", lambda k, shape: paper_mlp(k, shape, shared_noise=True))
vatlib.register_model("mlp-bn-labelled", lambda k, shape: paper_mlp(k, shape, bn_labelled=True))
vatlib.register_model("mlp-authors-init", lambda k, shape: paper_mlp(k, shape, authors_init=True))
vatlib.register_model("mlp-input-noise", lambda k, shape: paper_mlp(k, shape, input_noise=0.3))
vatlib.register_model("mlp-leaky", lambda k, shape: paper_mlp(k, shape, leaky=0.1))
