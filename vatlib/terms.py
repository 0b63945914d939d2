"""The loss terms on the unlabelled batch, and the way to add one (``register_term``).

A step's loss is cross-entropy on the labelled batch plus, for every term whose weight is > 0,
weight x term. A term is a function of a ``TermContext``: the model, the step's unlabelled images
and their clean logits, the views it asked for, the step and its own state; it never sees the
training run. The built-in terms are weighed by ``TrainConfig`` fields; a term added with
``register_term`` by ``TrainConfig.term_weights[name]``. Each is logged as ``loss_<name>`` in the
history. Experiments add their terms from their own files (``benchmarks/experiments/``): a term
enters this module only once it wins on validation over ten labelled draws.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .vat import balance_loss, entropy_loss, lds_and_logits

__all__ = ["LOSS_TERMS", "LossTerm", "TermContext", "active_terms", "all_terms", "flexmatch_thresholds",
           "pseudo_label_loss", "register_term", "term_weight"]

State = Dict[str, torch.Tensor]


@dataclass
class TermContext:
    """What an unlabelled loss term sees in one step (N images of the unlabelled batch, K classes).

    Attributes:
        model: the model being trained, in train mode. Call it on a view to train through that view.
        x: (N, C, H, W) float in [0, 1]: the unlabelled batch, weakly augmented as the run's shifts say.
        logits: (N, K) the clean pass ``model(x)``. It carries a gradient only if the term was registered
            with ``clean_grad=True``; otherwise it is a fixed target (detached).
        index: (N,) int64: the position of each image in the unlabelled set (0..U-1), for per-image memory.
        step: the update being computed, 1..steps.
        state: the term's own tensors, made by its ``init_state(U, K)``; changed in place, they are kept across
            steps and saved with the run, so a resumed run continues them. Empty for a term without init_state.
        strong: (N, C, H, W) a strongly augmented view of the same images (rotation, zoom, shift), if the term
            was registered with ``strong_view=True``; else None.
        adv_logits: (N, K) the logits of VAT's perturbed pass, when the VAT term ran before this one; else None.
    """

    model: nn.Module
    x: torch.Tensor
    logits: torch.Tensor
    index: torch.Tensor
    step: int
    state: State = dataclasses.field(default_factory=dict)
    strong: Optional[torch.Tensor] = None
    adv_logits: Optional[torch.Tensor] = None


TermFn = Callable[[TermContext], torch.Tensor]
InitState = Callable[[int, int], State]


class LossTerm(NamedTuple):
    fn: TermFn  # TermContext -> a scalar loss
    clean_grad: bool = False  # whether it trains through the clean logits (else they are a fixed target)
    strong_view: bool = False  # whether it needs TermContext.strong
    init_state: Optional[InitState] = None  # (n_unlabelled, num_classes) -> its state tensors


def pseudo_label_loss(model: nn.Module, strong: torch.Tensor, probs: torch.Tensor,
                      threshold: Union[float, torch.Tensor]) -> torch.Tensor:
    """FixMatch's loss: the cross-entropy of each strong view (N, C, H, W) against the most probable class of its
    probabilities ``probs`` (N, K), counted where that probability reaches ``threshold`` (a number, or (N,) one
    per image), averaged over all N.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3]])
        >>> loss = pseudo_label_loss(model, torch.rand(2, 1, 2, 2), probs, threshold=0.95)
        >>> float(loss)  # neither image is confident enough
        0.0
    """
    with torch.no_grad():
        conf, label = probs.max(dim=1)  # (N,), (N,)
        mask = (conf >= threshold).to(conf.dtype)
    return (F.cross_entropy(model(strong), label, reduction="none") * mask).mean()


def flexmatch_thresholds(memory: torch.Tensor, index: torch.Tensor, conf: torch.Tensor, label: torch.Tensor,
                         tau: float, num_classes: int) -> torch.Tensor:
    """FlexMatch's per-class confidence thresholds (Zhang et al. 2021) for the images at ``index`` (N,) predicted
    ``label`` (N,) with confidence ``conf`` (N,); then remembers the confident ones in ``memory``.

    ``memory[i]`` (U,) is the last class unlabelled image i was predicted with confidence >= tau (-1: never
    yet). A class's learning effect beta is its count of such images over the largest count, the
    never-confident ones included (FlexMatch's warm-up), and its threshold is tau * beta / (2 - beta):
    low for the classes the model is slow to pick up, up to tau for the most confident one. Everything
    is counted on the device, with no host synchronisation. Returns the thresholds (N,) of the images' classes.

    Example:
        >>> memory = torch.tensor([0, 0, 1, -1])  # class 0 twice, class 1 once, one image never confident
        >>> flexmatch_thresholds(memory, torch.tensor([3]), torch.tensor([0.99]), torch.tensor([1]), 0.9, 2)
        tensor([0.3000])
        >>> memory.tolist()  # image 3 was confident: remembered for the next step
        [0, 0, 1, 1]
    """
    counts = torch.zeros(num_classes + 1, device=memory.device).index_add_(
        0, memory + 1, torch.ones_like(memory, dtype=torch.float32))  # (1 + K,): never-confident first
    beta = counts[1:] / counts.max()
    thresholds = tau * beta / (2 - beta)
    memory[index] = torch.where(conf >= tau, label, memory[index])  # after reading: counts from the next step
    return thresholds[label]


def builtin_terms(cfg: TrainConfig) -> Dict[str, LossTerm]:
    """The built-in terms with ``cfg``'s settings, in the order they are computed."""

    def vat(ctx: TermContext) -> torch.Tensor:
        per_sample, ctx.adv_logits = lds_and_logits(ctx.model, ctx.x, ctx.logits, eps=cfg.eps, xi=cfg.xi,
                                                    n_power=cfg.n_power)
        return per_sample.mean()

    def pseudo(ctx: TermContext) -> torch.Tensor:
        """Cross-entropy of a strong view against the clean prediction, where that one is confident (FixMatch)."""
        probs = ctx.logits.float().softmax(dim=1)
        if not cfg.pseudo_flex:
            return pseudo_label_loss(ctx.model, ctx.strong, probs, cfg.pseudo_threshold)
        with torch.no_grad():
            conf, label = probs.max(dim=1)
            threshold = flexmatch_thresholds(ctx.state["memory"], ctx.index, conf, label, cfg.pseudo_threshold,
                                             probs.shape[1])
        return pseudo_label_loss(ctx.model, ctx.strong, probs, threshold)

    def memory(n_unlabelled: int, num_classes: int) -> State:
        return {"memory": torch.full((n_unlabelled,), -1, dtype=torch.int64)} if cfg.pseudo_flex else {}

    return {
        "vat": LossTerm(vat),  # the clean prediction is its target
        "ent": LossTerm(lambda ctx: entropy_loss(ctx.logits), clean_grad=True),
        "bal": LossTerm(lambda ctx: balance_loss(ctx.logits), clean_grad=True),
        "pseudo": LossTerm(pseudo, strong_view=True, init_state=memory),
    }


# The built-in terms' names and the TrainConfig field that weighs each, in the order they are computed.
LOSS_TERMS: Dict[str, str] = {"vat": "vat_weight", "ent": "entmin_weight", "bal": "balance_weight",
                              "pseudo": "pseudo_weight"}
EXTRA_TERMS: Dict[str, LossTerm] = {}  # added with register_term, computed after the built-in ones


def register_term(name: str, fn: TermFn, *, clean_grad: bool = False, strong_view: bool = False,
                  init_state: Optional[InitState] = None) -> None:
    """Add an unlabelled loss term, weighed by ``TrainConfig.term_weights[name]`` (off unless given a weight).

    Args:
        name: a Python identifier; the history logs the term as ``loss_<name>``.
        fn: ``fn(ctx: TermContext) -> torch.Tensor``, a scalar loss (see ``TermContext`` for what it holds and
            the shapes). It is called once per step, after the built-in terms.
        clean_grad: True if it trains through ``ctx.logits`` (entropy-like terms); else they come detached.
        strong_view: True if it needs ``ctx.strong``, a strong view of the batch (one more augmentation per step).
        init_state: ``(n_unlabelled, num_classes) -> {name: tensor}``, the term's state at step 0 (moved to the
            run's device). ``ctx.state`` then holds it; changes made in place are saved in ``last.pth`` and
            restored on resume.

    Registering a name again replaces that term (a re-run notebook cell); a built-in name is refused.

    Example:
        >>> register_term("confidence", lambda ctx: -ctx.logits.softmax(1).amax(1).mean(), clean_grad=True)
        >>> list(all_terms(TrainConfig(term_weights={"confidence": 0.1})))
        ['vat', 'ent', 'bal', 'pseudo', 'confidence']
        >>> del EXTRA_TERMS["confidence"]
    """
    if name in LOSS_TERMS or name == "sup":
        raise ValueError(f"term name {name!r} is taken by a built-in term; built-in: {['sup', *LOSS_TERMS]}")
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"term name {name!r} is invalid; allowed: a Python identifier (it names loss_<name>)")
    if not callable(fn):
        raise TypeError(f"fn must be callable (TermContext) -> loss, got {type(fn).__name__}")
    if init_state is not None and not callable(init_state):
        raise TypeError(f"init_state must be callable (n_unlabelled, num_classes) -> dict of tensors, got "
                        f"{type(init_state).__name__}")
    EXTRA_TERMS[name] = LossTerm(fn, clean_grad=bool(clean_grad), strong_view=bool(strong_view), init_state=init_state)


def term_weight(cfg: TrainConfig, name: str) -> float:
    """The configured weight of unlabelled term ``name`` (before any ramp-up)."""
    field = LOSS_TERMS.get(name)
    return float(getattr(cfg, field)) if field is not None else float(cfg.term_weights.get(name, 0.0))


def all_terms(cfg: TrainConfig) -> Dict[str, LossTerm]:
    """The built-in terms and the registered ones this config weighs, in the order they are computed."""
    unknown = [k for k in cfg.term_weights if k not in EXTRA_TERMS]
    if unknown:
        raise ValueError(f"TrainConfig.term_weights names unregistered term(s) {unknown}; allowed: "
                         f"{sorted(EXTRA_TERMS) or 'none registered yet (vatlib.register_term)'}")
    return {**builtin_terms(cfg), **{k: EXTRA_TERMS[k] for k in cfg.term_weights}}


def active_terms(cfg: TrainConfig) -> List[str]:
    """The unlabelled terms this config turns on (weight > 0), in order; [] is the supervised-only baseline."""
    return [name for name in all_terms(cfg) if term_weight(cfg, name) > 0]
