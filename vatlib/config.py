"""Every knob of a run (``TrainConfig``), the named recipes (``PRESETS``) and what a labelled draw is.

Each field carries its reason in ``help``, which is also its ``--help`` text on the command line.
Defaults are the recipe ``python -m vatlib train`` runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple, Union

import torch

from .data import DATASETS
from .inference import resolve_device
from .model import EXTRA_MODELS, MODELS
from .schedules import SCHEDULES
from .vat import DEFAULT_XI

__all__ = ["PRESETS", "RUN_SETTINGS", "TrainConfig", "draw_config", "parse_draws", "preset_config", "recipe",
           "recipe_differences", "same_recipe"]


def knob(default: Any, help: str) -> Any:  # noqa: A002 -- argparse's word
    """A TrainConfig field with its reason, shown by ``python -m vatlib train --help``."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every knob of one run. Defaults are the recipe ``python -m vatlib train`` uses."""

    # data
    dataset: str = knob("MNIST", f"one of {', '.join(DATASETS)}")
    data_root: str = knob("data", "folder holding <dataset>/raw/ in torchvision's layout")
    per_class: int = knob(10, "labelled images per class: 100 labels for the 10 classes")
    n_validation: int = knob(1000, "labelled hold-out that chooses the checkpoint, nothing else (1,000 as in the "
                                   "original VAT MNIST code)")
    all_labels: bool = knob(False, "reference, not semi-supervised: labelled batches drawn from every non-validation "
                                   "image with its true label (the ceiling)")
    data_seed: int = knob(0, "draws the labelled/validation split; draw k is data_seed = seed = k (draw_config)")
    seed: int = knob(0, "model init, batch order, augmentation and VAT's random directions")
    # model
    model: str = knob("convnet", f"one of {', '.join(MODELS)} (mlp: the VAT paper's 784-1200-600-300-150-10 network; "
                                 "width, final_blocks and pool_first are the convnet's)")
    width: int = knob(16, "channels of the first conv (then 2x, 4x); 24 gained ~0.25 validation points at 1.9x the "
                          "step")
    final_blocks: int = knob(2, "conv blocks in the last, 7x7 stage: the second doubles the parameters (33k -> 70k) "
                                "at 1.2x the step; the small-* presets have 1")
    pool_first: bool = knob(False, "the first block pools before its BatchNorm and ReLU: a 1.08-1.13x faster step, "
                                   "same parameters (the small-fast preset)")
    # optimisation
    steps: int = knob(3500, "optimiser updates (5-6 min on a 2-core AVX-512 CPU with the defaults)")
    batch_labelled: int = knob(32, "labelled images per step, drawn with replacement, each freshly augmented")
    batch_unlabelled: int = knob(128, "unlabelled images per step; 64 lost 0.3 validation points")
    lr: float = knob(3e-3, "Adam peak learning rate")
    lr_schedule: str = knob("cosine", "cosine: decayed to 0 over the steps; paper: x0.9 every 500 steps (the VAT "
                                      "authors' MNIST code: x0.9 per epoch of 500 updates)")
    weight_decay: float = knob(0.0, "L2 via AdamW; VAT is already a strong regulariser")
    # semi-supervised terms (vatlib.terms)
    vat_weight: float = knob(1.0, "weight of the VAT (LDS) loss; 0 turns VAT off")
    eps: float = knob(3.0, "L2 radius of the adversarial perturbation in [0, 1] pixel units (a digit has norm ~9); 3 "
                           "beat 1 on MNIST validation over ten draws; other data: python -m vatlib tune")
    xi: float = knob(DEFAULT_XI, "power-iteration finite-difference step; the paper's 1e-6 is rounding noise in "
                                 "float32")
    n_power: int = knob(1, "power iterations; 1 is the paper's choice")
    entmin_weight: float = knob(0.0, "entropy minimisation on unlabelled predictions: +2.4 points over VAT alone, "
                                     "but the pseudo-labels do its job better (0 = off)")
    balance_weight: float = knob(0.0, "KL(mean unlabelled prediction || uniform): stops one class swallowing another "
                                      "(0 = off)")
    # FixMatch-style pseudo-labels: a strong view of each unlabelled image is trained towards the clean prediction
    # where that one is confident; it reaches the invariances VAT's small L2 ball cannot (rotations, zooms).
    pseudo_weight: float = knob(1.0, "weight of the pseudo-label term (0 = off)")
    pseudo_threshold: float = knob(0.95, "confidence a clean prediction needs to become a pseudo-label (FixMatch's "
                                         "tau)")
    pseudo_flex: bool = knob(True, "FlexMatch: per-class thresholds, lower for the classes with fewer confident "
                                   "predictions so far")
    strong_shift: int = knob(3, "the strong view's random translation (px)")
    strong_rotate: float = knob(20.0, "the strong view's random rotation (degrees)")
    strong_scale: float = knob(0.15, "the strong view's random zoom (fraction)")
    term_weights: Dict[str, float] = knob({}, "weights of terms added with vatlib.register_term, by name (none by "
                                              "default; on the command line: name=weight,...)")
    # augmentation
    stroke_p: float = knob(0.5, "probability of one extra random stroke on a labelled image: the class survives a "
                                "stray stroke (draw 1, no crossed 7 labelled: 98.4 -> 99.4 % validation)")
    max_shift: int = knob(2, "random translation of every image by up to this many pixels (0 = none)")
    max_rotate: float = knob(0.0, "random rotation (degrees) of every image; > 0 (or max_scale > 0) switches to "
                                  "bilinear affine views")
    max_scale: float = knob(0.0, "random zoom of every image by up to this fraction (0.1 = 0.9x to 1.1x)")
    rampup_steps: int = knob(0, "unsupervised weights ramp up linearly over these steps (0 = full weight at once)")
    ema_decay: float = knob(0.99, "evaluate and save an exponential moving average of the weights (0 = raw weights)")
    # bookkeeping
    eval_every: int = knob(250, "steps between validation/test evaluations (and checkpoint choices)")
    out: str = knob("runs/default", "folder for best.pth, last.pth, history.json and config.json ('' = none)")
    device: str = knob("auto", "auto (cuda, then mps, then cpu), or a torch device such as cpu, cuda:0")
    num_threads: int = knob(0, "CPU threads for torch (0 = torch's default, one per core)")
    channels_last: bool = knob(True, "NHWC memory layout: ~1.4x faster convolutions on the CPU with oneDNN")
    compile: bool = knob(False, "torch.compile the model (eager if no compiler works); 1.3-1.75x slower on a 2-core "
                                "AVX2 CPU")
    amp: bool = knob(False, "bfloat16 autocast for the training passes (the power iteration stays float32); for "
                            "GPUs")
    progress: bool = knob(True, "show a tqdm progress bar")
    report_test: bool = knob(True, "also evaluate the test set at each evaluation, for reporting only")

    def validate(self) -> torch.device:
        """Raise ValueError naming the field, its value and the allowed values, before any work starts.

        Returns the device the run will use (``resolve_device(self.device)``).
        """
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} is invalid; allowed: {allowed}")

        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        need(self.dataset in DATASETS, "dataset", f"one of {list(DATASETS)}")
        need(self.model in MODELS or self.model in EXTRA_MODELS, "model",
             f"one of {sorted(MODELS) + sorted(EXTRA_MODELS)} (vatlib.register_model adds one)")
        need(self.lr_schedule in SCHEDULES, "lr_schedule", f"one of {list(SCHEDULES)} (vatlib.register_schedule adds one)")
        for name in ("per_class", "steps", "batch_labelled", "batch_unlabelled", "eval_every", "width", "n_power",
                     "final_blocks"):
            value = getattr(self, name)
            need(number(value) and int(value) == value and value >= 1, name, "an integer >= 1")
        for name in ("n_validation", "rampup_steps", "max_shift", "num_threads", "strong_shift"):
            value = getattr(self, name)
            need(number(value) and int(value) == value and value >= 0, name, "an integer >= 0")
        for name in ("lr", "eps", "xi"):
            need(number(getattr(self, name)) and getattr(self, name) > 0, name, "> 0")
        for name in ("vat_weight", "entmin_weight", "balance_weight", "pseudo_weight", "weight_decay"):
            value = getattr(self, name)
            need(number(value) and value >= 0 and math.isfinite(value), name, "a finite number >= 0")
        need(0 <= self.ema_decay < 1, "ema_decay", "0 <= ema_decay < 1")
        for name in ("max_shift", "strong_shift"):
            need(getattr(self, name) < 14, name, "0..13 pixels")
        for name in ("max_rotate", "strong_rotate"):
            need(0 <= getattr(self, name) <= 180, name, "0..180 degrees")
        for name in ("max_scale", "strong_scale"):
            need(0 <= getattr(self, name) < 1, name, f"0 <= {name} < 1")
        need(0 < self.pseudo_threshold < 1, "pseudo_threshold", "0 < pseudo_threshold < 1")
        need(0 <= self.stroke_p <= 1, "stroke_p", "0 <= stroke_p <= 1")
        for name in ("pseudo_flex", "pool_first", "all_labels", "channels_last", "compile", "amp", "progress",
                     "report_test"):
            need(isinstance(getattr(self, name), bool), name, "True or False")
        # Whether each name is registered is checked where the terms are known (vatlib.terms.all_terms).
        need(isinstance(self.term_weights, dict) and all(isinstance(k, str) and number(w) and w >= 0 and math.isfinite(w)
                                                         for k, w in self.term_weights.items()),
             "term_weights", "{name: finite weight >= 0} for terms added with vatlib.register_term")
        return resolve_device(self.device)  # raises ValueError for a bad device

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def draw_config(cfg: TrainConfig, k: int, **overrides: Any) -> TrainConfig:
    """``cfg`` on labelled draw ``k``: the split (data_seed) and the training randomness (seed) are both k.

    Every table, screen and tune in the project means this by "draw k".
    """
    return dataclasses.replace(cfg, data_seed=k, seed=k, **overrides)


def parse_draws(text: str) -> List[int]:
    """``--draws``, everywhere: "10" -> draws 0-9 (a count); "8-9" -> 8 and 9 (a range); "2,5" -> 2 and 5 (a list)."""
    try:
        if "," in text:
            draws = [int(d) for d in text.split(",")]
        elif "-" in text:
            first, last = (int(d) for d in text.split("-"))
            draws = list(range(first, last + 1))
        else:
            draws = list(range(int(text)))
    except ValueError:
        draws = []
    if not draws or min(draws) < 0:
        raise ValueError(f"--draws {text!r}: allowed: a count N (draws 0..N-1), a range A-B or a list A,B,...; "
                         "draws are integers >= 0")
    return draws


# Named recipes: overrides on TrainConfig's defaults (python -m vatlib train --preset NAME).
# The small model: one conv block at 7x7 (33k parameters), at eps 1, which the small-* presets are built on.
SMALL = dict(final_blocks=1, eps=1.0)
PRESETS: Dict[str, Dict[str, Any]] = {
    # VAT (eps 3) + FlexMatch pseudo-labels + a random stroke on the labelled images: `python -m vatlib train`.
    "default": {},
    # The default recipe on the small model, 9,000 steps (twice the default's minutes): level with the default on
    # draws 0-4 (98.99 against 99.04 % test), so it holds no title; best_model.pth's weights come from it.
    "small-long": dict(SMALL, steps=9000, eval_every=500),
    # The default recipe on the small model, 3,000 steps, on a step 1.9x cheaper (64 unlabelled images, the first
    # block pooled first); it lost 0.3 points of mean validation accuracy over draws 0-9: a run in about half the time.
    "small-fast": dict(SMALL, steps=3000, batch_unlabelled=64, pool_first=True),
    # The same labels, model, shifts, optimiser and steps, with every unlabelled term off and no strokes.
    "supervised": dict(vat_weight=0.0, entmin_weight=0.0, balance_weight=0.0, pseudo_weight=0.0, stroke_p=0.0),
    # VAT on its own: the default recipe without its pseudo-labels and strokes, with entropy minimisation (the VAT
    # paper's VAT+EntMin). Without it, on this CNN, the LDS keeps falling by flattening the predictions until
    # classes merge (draw 0: validation 96.6 % at step 750, 88.0 % at the end; with it 98.9 % and no drift).
    # eps 3, chosen on validation (draws 1 and 7, best 98.1 and 96.6 % at eps 1): 98.3 and 99.2 %
    # (eps 2: 98.1, 98.2; eps 4: 98.0, 98.5; a class-balance term at eps 1: 97.9, 98.1). Without pseudo-labels,
    # the radius is all that tells VAT how far a class extends.
    "vat": dict(pseudo_weight=0.0, stroke_p=0.0, entmin_weight=1.0, eps=3.0),
    # The VAT paper's MNIST setup (Miyato et al., TPAMI 2018: 1.36 % test error with 100 labels). The network, its
    # noise and eps are the authors' word (takerum/vat issue #3: 784-1200-600-300-150-10, Gaussian noise 0.5 on the
    # hidden layers, eps 5.0 on [0, 1] pixels); their public MNIST code is the ICLR 2016 one (784-1200-1200-10, eps
    # 0.3, no noise) and gives the rest: xi 1e-6, one power iteration, Adam at 0.002 decayed x0.9 every 500 updates,
    # batches of 100 labelled and 250 unlabelled images, 50,000 updates, VAT alone, no augmentation, no weight
    # average; the paper reports the final model, which the run's final step is. Differences from that code:
    # labelled batches are drawn with replacement (theirs: all 100 each update), BatchNorm statistics include the
    # clean unlabelled pass (theirs: labelled only, recomputed on the unlabelled set before testing), PyTorch's
    # weight init, and each pass draws its own noise (how the authors' noisy model shared it is not public).
    "paper": dict(model="mlp", eps=5.0, xi=1e-6, n_power=1, lr=2e-3, lr_schedule="paper", batch_labelled=100,
                  batch_unlabelled=250, steps=50_000, eval_every=1000, vat_weight=1.0, entmin_weight=0.0,
                  pseudo_weight=0.0, stroke_p=0.0, max_shift=0, ema_decay=0.0),
}


def preset_config(name: str = "default", **overrides: Any) -> TrainConfig:
    """TrainConfig of a named preset, with keyword overrides on top."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; allowed: {sorted(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **overrides})


# Where and how a run is carried out, not what it computes: two configs that differ only in these fields are the
# same run. A run resumes under other settings, and a results file counts both as one record. Everything else is
# the recipe.
RUN_SETTINGS = ("out", "data_root", "device", "num_threads", "progress", "report_test")


def recipe(config: Union[TrainConfig, Dict[str, Any]]) -> Dict[str, Any]:
    """The fields of a config (a ``TrainConfig`` or its ``to_dict()``) that decide what a run computes.

    ``RUN_SETTINGS`` are left out, and so are the fields the run never reads: VAT's eps, xi and n_power when VAT is
    off. Two runs are the same run exactly when their recipes are equal (``same_recipe``).

    Example:
        >>> recipe(TrainConfig(out="a", device="cpu")) == recipe(TrainConfig(out="b"))
        True
        >>> "eps" in recipe(TrainConfig(vat_weight=0.0))
        False
    """
    fields = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    unread = ("eps", "xi", "n_power") if fields.get("vat_weight") == 0 else ()
    return {k: v for k, v in fields.items() if k not in RUN_SETTINGS and k not in unread}


def recipe_differences(a: Union[TrainConfig, Dict[str, Any]],
                       b: Union[TrainConfig, Dict[str, Any]]) -> Dict[str, Tuple[Any, Any]]:
    """The recipe fields where two configs differ, with (a's value, b's value); a field only one of them has is
    listed with None for the other.

    Example:
        >>> recipe_differences(TrainConfig(eps=2.0), TrainConfig(eps=3.0, out="elsewhere"))
        {'eps': (2.0, 3.0)}
    """
    ra, rb = recipe(a), recipe(b)
    return {k: (ra.get(k), rb.get(k)) for k in {**rb, **ra} if ra.get(k) != rb.get(k)}


def same_recipe(a: Union[TrainConfig, Dict[str, Any]], b: Union[TrainConfig, Dict[str, Any]]) -> bool:
    """Whether two configs describe the same run (see ``recipe``)."""
    return recipe(a) == recipe(b)
