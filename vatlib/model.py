"""vatlib's own models: a small CNN, and the VAT paper's MLP.

Every model here takes images scaled to [0, 1], shape (N, C, H, W) (MNIST: (N, 1, 28, 28)), and
returns logits (N, num_classes). Normalisation happens inside the model, so callers never need to
know the dataset statistics and VAT's eps is measured in plain pixel units. ``train`` also takes a
model of your own: any ``nn.Module`` that maps such images to logits.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence, Tuple

import torch
from torch import nn

__all__ = ["ConvNet", "EXTRA_MODELS", "MLP", "MODELS", "build_model", "model_spec", "register_model"]

# Mean/std of MNIST training pixels in [0, 1]; close enough for the rest of the family, and only
# a fixed affine map, so it changes nothing but the conditioning of the first layer.
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081
# Inputs are images in [0, 1]; VAT perturbations push pixels somewhat outside, so only values beyond
# this margin are refused. It catches the usual mistake, 0-255 pixel values, and NaN/inf.
INPUT_MARGIN = 8.0


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    """Conv-BN-ReLU; ``pool``: max-pool (2x) between the conv and the BatchNorm."""
    # bias=False: the BatchNorm shift makes a conv bias redundant.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        *([nn.MaxPool2d(2)] if pool else []),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ImageClassifier(nn.Module):
    """What every model here shares: images (N, C, H, W) in [0, 1] -> ``embed`` (N, D) -> ``head`` -> logits (N, K),
    and a check of every input (shape, dtype, device, range) while ``check_inputs`` is on, for models in users'
    hands. ``train`` turns it off for the models it trains on images it made itself: the range check costs a
    reduction per pass and, on a GPU, a host synchronisation."""

    num_classes: int
    head: nn.Module

    def input_shape_ok(self, shape: Tuple[int, ...]) -> bool:
        """Whether one image of this shape (C, H, W) fits the model."""
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError/TypeError that says what is wrong with ``x`` and how to fix it."""
        want = self.expected_input
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor of images {want}, got {type(x).__name__}")
        if x.dim() != 4 or not self.input_shape_ok(tuple(x.shape[1:])):
            hint = " (add the channel dim: x.unsqueeze(1))" if x.dim() == 3 and self.input_shape_ok((1, *x.shape[1:])) else ""
            raise ValueError(f"expected images of shape {want}, got {tuple(x.shape)}{hint}")
        weight = next(self.parameters())
        if not x.is_floating_point():
            raise TypeError(f"expected floating-point images scaled to [0, 1], got dtype {x.dtype} "
                            "(uint8 images: vatlib.to_float(x), or x.float() / 255)")
        if x.dtype != weight.dtype or x.device != weight.device:
            raise TypeError(f"images are {x.dtype} on {x.device} but the model is {weight.dtype} on {weight.device}; "
                            f"use x.to(next(model.parameters()))")
        lo, hi = torch.aminmax(x.detach())
        if not (lo >= -INPUT_MARGIN and hi <= 1 + INPUT_MARGIN):  # also False for NaN
            raise ValueError(f"expected images scaled to [0, 1], got values from {lo.item():.4g} to {hi.item():.4g}"
                             + (" (0-255 pixels? divide by 255)" if hi > 1 + INPUT_MARGIN and hi <= 255 else ""))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, D): what the head sees."""
        if self.check_inputs:
            self.check_input(x)
        return self._features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class ConvNet(ImageClassifier):
    """Conv-BN-ReLU blocks with max-pooling, global average pooling and a linear head.

    The defaults are the default recipe's model (``TrainConfig`` width and final_blocks).

    Shapes for width w on 28x28 images: (N,C,28,28) -> w @28 -> pool -> 2w @14 -> pool -> 4w @7 -> GAP -> (N, K).
    Any image size of at least 4x4 works (global average pooling); ``in_channels`` is C.

    ``final_blocks``: conv blocks in the last (7x7, 4w-channel) stage. The second one adds capacity
    where it is cheapest (a 7x7 map costs a sixteenth of a 28x28 one per channel) and lets the head
    see features from a 5x5 receptive field of 7x7 cells instead of 3x3.

    ``pool_first``: the first block pools straight after its convolution, so its BatchNorm and ReLU
    (and their backward passes) work on 14x14 maps instead of 28x28 ones, a quarter of the memory
    traffic of the network's largest activations, with the same parameters.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, pool_first: bool = False, final_blocks: int = 2,
                 in_channels: int = 1) -> None:
        super().__init__()
        if num_classes < 2 or width < 1 or final_blocks < 1 or in_channels < 1:
            raise ValueError(f"ConvNet needs num_classes >= 2, width >= 1, final_blocks >= 1 and in_channels >= 1, "
                             f"got {num_classes}, {width}, {final_blocks}, {in_channels}")
        self.num_classes, self.width, self.pool_first = num_classes, width, bool(pool_first)
        self.final_blocks, self.in_channels = int(final_blocks), int(in_channels)
        w = width
        # 28 -> 14: conv -> pool -> BN -> ReLU, or conv -> BN -> ReLU -> pool. The pool-first layers sit
        # flat in ``features`` (features.0 the conv ... features.4 the next block).
        block1 = [*_conv_bn(in_channels, w, pool=True)] if pool_first else [_conv_bn(in_channels, w), nn.MaxPool2d(2)]
        self.features = nn.Sequential(
            *block1,
            _conv_bn(w, 2 * w),
            _conv_bn(2 * w, 2 * w),
            nn.MaxPool2d(2),  # 14 -> 7
            _conv_bn(2 * w, 4 * w),
            *[_conv_bn(4 * w, 4 * w) for _ in range(self.final_blocks - 1)],
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # (N, 4w)
        )
        self.head = nn.Linear(4 * w, num_classes)
        # Check every input (shape, dtype, device, range), for models in users' hands. ``train`` turns
        # it off for the models it trains on images it made itself: the range check costs a
        # reduction per pass and, on a GPU, a host synchronisation.
        self.check_inputs = True
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD), persistent=False)

    @property
    def expected_input(self) -> str:
        return f"(N, {self.in_channels}, H, W) with H, W >= 4"

    def input_shape_ok(self, shape: Tuple[int, ...]) -> bool:
        return len(shape) == 3 and shape[0] == self.in_channels and min(shape[1:]) >= 4

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.pixel_mean) / self.pixel_std)


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) to its input in training mode; the identity in eval mode."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.std * torch.randn_like(x) if self.training and self.std > 0 else x


class MLP(ImageClassifier):
    """The VAT paper's MNIST network (Miyato et al., TPAMI 2018): 784-1200-600-300-150-C, each hidden layer
    Linear-BN-ReLU followed by Gaussian noise of std ``noise`` in training (as the paper's authors describe it,
    after Salimans et al. 2016), and a Linear-BN output layer (as in the authors' code). Pixels enter as they are,
    in [0, 1], so eps is in the paper's units."""

    def __init__(self, num_classes: int = 10, hidden: Sequence[int] = (1200, 600, 300, 150), noise: float = 0.5,
                 in_features: int = 28 * 28) -> None:
        super().__init__()
        if num_classes < 2 or not hidden or min(hidden) < 1 or noise < 0 or in_features < 1:
            raise ValueError(f"MLP needs num_classes >= 2, hidden sizes >= 1, noise >= 0 and in_features >= 1, got "
                             f"{num_classes}, {list(hidden)}, {noise}, {in_features}")
        self.num_classes, self.hidden, self.noise = num_classes, [int(h) for h in hidden], float(noise)
        self.in_features = int(in_features)
        layers: list = [nn.Flatten()]
        for n_in, n_out in zip([self.in_features, *self.hidden[:-1]], self.hidden):
            layers += [nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.ReLU(inplace=True),
                       GaussianNoise(self.noise)]
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(self.hidden[-1], num_classes, bias=False), nn.BatchNorm1d(num_classes))
        self.check_inputs = True

    @property
    def expected_input(self) -> str:
        return f"(N, C, H, W) with C * H * W = {self.in_features}"

    def input_shape_ok(self, shape: Tuple[int, ...]) -> bool:
        return len(shape) == 3 and shape[0] * shape[1] * shape[2] == self.in_features

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


MODELS = {"convnet": ConvNet, "mlp": MLP}  # vatlib's own models, which TrainConfig.model names
# Models added with register_model: name -> build(num_classes, (C, H, W)) -> nn.Module.
EXTRA_MODELS: Dict[str, Callable[[int, Tuple[int, int, int]], nn.Module]] = {}


def register_model(name: str, build: Callable[[int, Tuple[int, int, int]], nn.Module]) -> None:
    """Add a model that ``TrainConfig(model=name)`` trains: ``build(num_classes, (C, H, W))`` returns it, called
    after the run's seed is set. Its checkpoints are those of a model of one's own (``load_model(path,
    model=...)``). Registering a name again replaces it; a built-in name is refused. For one run, passing the model
    to ``train(model=...)`` does the same; a registered name also tells results files which model a run trained.

    Example:
        >>> register_model("tiny-mlp", lambda k, shape: MLP(k, hidden=(32,), in_features=shape[0] * shape[1] * shape[2]))
        >>> EXTRA_MODELS["tiny-mlp"](10, (1, 28, 28)).hidden
        [32]
        >>> del EXTRA_MODELS["tiny-mlp"]
    """
    if name in MODELS:
        raise ValueError(f"model name {name!r} is taken by a built-in model; built-in: {sorted(MODELS)}")
    if not callable(build):
        raise TypeError(f"build must be callable (num_classes, (C, H, W)) -> nn.Module, got {type(build).__name__}")
    EXTRA_MODELS[name] = build


def build_model(name: str = "convnet", **kwargs: Any) -> nn.Module:
    """Instantiate a model by name, e.g. ``build_model("convnet", num_classes=10, width=16)``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def model_spec(model: nn.Module) -> Dict[str, Any]:
    """The plain-typed description of a model's architecture. ``build_model(**spec)`` turns that of vatlib's own
    models back into the same architecture; a model of your own is named by its class (``name`` "custom"), and
    its checkpoint holds its weights for ``load_model(path, model=YourModel(...))``."""
    if type(model) is MLP:
        return {"name": "mlp", "num_classes": model.num_classes, "hidden": list(model.hidden), "noise": model.noise,
                "in_features": model.in_features}
    if type(model) is ConvNet:
        return {"name": "convnet", "num_classes": model.num_classes, "width": model.width,
                "final_blocks": model.final_blocks, "pool_first": model.pool_first, "in_channels": model.in_channels}
    return {"name": "custom", "class": f"{type(model).__module__}.{type(model).__qualname__}"}
