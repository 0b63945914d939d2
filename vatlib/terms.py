"""The loss terms on the unlabelled batch, in one table, and the way to add one (``register_term``).

A step's loss is cross-entropy on the labelled batch plus, for every term whose weight is > 0,
weight x term. The built-in terms are weighed by a ``TrainConfig`` field; a term added with
``register_term`` by ``TrainConfig.term_weights[name]``. Each is logged as ``loss_<name>`` in the
history. Experiments add their terms this way from their own files (``benchmarks/experiments/``):
a term enters this module only once it wins on validation over ten labelled draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .vat import balance_loss, entropy_loss, lds_and_logits

if TYPE_CHECKING:  # the run calls the terms; the terms only read it
    from .run import Run

__all__ = ["EXTRA_TERMS", "FlexMatchThresholds", "LOSS_TERMS", "LossTerm", "Unlabelled", "active_terms",
           "pseudo_label_loss", "register_term", "term_weight"]


@dataclass
class Unlabelled:
    """What the unlabelled terms see in one step."""

    x: torch.Tensor  # the augmented unlabelled batch (N, 1, 28, 28)
    logits: torch.Tensor  # its clean logits; with a gradient only if an active term asks for one (LossTerm.clean_grad)
    pos: torch.Tensor  # (N,) positions of its images in the run's unlabelled indices (run.unlabelled[pos])
    adv_logits: Optional[torch.Tensor] = None  # the VAT term's perturbed pass, for the terms after it to reuse


TermFn = Callable[["Run", Unlabelled], torch.Tensor]


class LossTerm(NamedTuple):
    fn: TermFn  # (run, unlabelled batch) -> a scalar loss
    clean_grad: bool  # whether it trains through the clean logits (else they are a fixed target)
    weight_field: Optional[str] = None  # the TrainConfig field that weighs it; None: TrainConfig.term_weights[name]


def _vat_term(run: "Run", u: Unlabelled) -> torch.Tensor:
    cfg = run.cfg
    per_sample, u.adv_logits = lds_and_logits(run.model, u.x, u.logits, eps=cfg.eps, xi=cfg.xi, n_power=cfg.n_power)
    return per_sample.mean()


def _pseudo_term(run: "Run", u: Unlabelled) -> torch.Tensor:
    """Cross-entropy of a strong view against the clean prediction, where that one is confident (FixMatch)."""
    return pseudo_label_loss(run, u.pos, u.logits.detach().float().softmax(dim=1))


def pseudo_label_loss(run: "Run", pos: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """The pseudo-label term for class probabilities ``probs`` (N, C) of the unlabelled images at ``pos``: the
    cross-entropy of a strong view of each against its most probable class, where that one passes the threshold
    (FlexMatch's per class when ``pseudo_flex``). An experiment that changes the probabilities calls it."""
    with torch.no_grad():
        conf, label = probs.max(dim=1)  # (N,), (N,)
        threshold = run.flex.thresholds(pos, conf, label) if run.flex is not None else run.cfg.pseudo_threshold
        mask = (conf >= threshold).to(conf.dtype)
    strong, _ = run.views(run.unlabelled[pos], strong=True)
    return (F.cross_entropy(run.model(strong), label, reduction="none") * mask).mean()


# The built-in terms, computed in this order.
LOSS_TERMS: Dict[str, LossTerm] = {
    "vat": LossTerm(_vat_term, clean_grad=False, weight_field="vat_weight"),  # the clean prediction is its target
    "ent": LossTerm(lambda run, u: entropy_loss(u.logits), clean_grad=True, weight_field="entmin_weight"),
    "bal": LossTerm(lambda run, u: balance_loss(u.logits), clean_grad=True, weight_field="balance_weight"),
    "pseudo": LossTerm(_pseudo_term, clean_grad=False, weight_field="pseudo_weight"),
}
EXTRA_TERMS: Dict[str, LossTerm] = {}  # added with register_term, computed after the built-in ones


def register_term(name: str, fn: TermFn, *, clean_grad: bool = False) -> None:
    """Add an unlabelled loss term, weighed by ``TrainConfig.term_weights[name]`` (off unless given a weight).

    ``fn(run, u)`` returns a scalar: ``u`` is the step's ``Unlabelled`` batch (images, clean logits,
    positions, and VAT's perturbed logits if VAT ran), ``run`` the ``vatlib.Run`` (model, config,
    ``run.views``, ``run.train_images``, ...). ``clean_grad=True`` if it trains through ``u.logits``.
    Registering a name again replaces that term (a re-run notebook cell); a built-in name is refused.

    Example:
        >>> register_term("confidence", lambda run, u: -u.logits.softmax(1).amax(1).mean(), clean_grad=True)
        >>> list(all_terms(TrainConfig(term_weights={"confidence": 0.1})))
        ['vat', 'ent', 'bal', 'pseudo', 'confidence']
        >>> del EXTRA_TERMS["confidence"]
    """
    if name in LOSS_TERMS or name == "sup":
        raise ValueError(f"term name {name!r} is taken by a built-in term; built-in: {['sup', *LOSS_TERMS]}")
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"term name {name!r} is invalid; allowed: a Python identifier (it names loss_<name>)")
    if not callable(fn):
        raise TypeError(f"fn must be callable (run, unlabelled) -> loss, got {type(fn).__name__}")
    EXTRA_TERMS[name] = LossTerm(fn, clean_grad=bool(clean_grad))


def term_weight(cfg: TrainConfig, name: str) -> float:
    """The configured weight of unlabelled term ``name`` (before any ramp-up)."""
    term = LOSS_TERMS.get(name)
    if term is not None:
        return float(getattr(cfg, term.weight_field))
    return float(cfg.term_weights.get(name, 0.0))


def all_terms(cfg: TrainConfig) -> Dict[str, LossTerm]:
    """The built-in terms and the registered ones this config weighs, in the order they are computed."""
    unknown = [k for k in cfg.term_weights if k not in EXTRA_TERMS]
    if unknown:
        raise ValueError(f"TrainConfig.term_weights names unregistered term(s) {unknown}; allowed: "
                         f"{sorted(EXTRA_TERMS) or 'none registered yet (vatlib.register_term)'}")
    return {**LOSS_TERMS, **{k: EXTRA_TERMS[k] for k in cfg.term_weights}}


def active_terms(cfg: TrainConfig) -> List[str]:
    """The unlabelled terms this config turns on (weight > 0), in order; [] is the supervised-only baseline."""
    return [name for name in all_terms(cfg) if term_weight(cfg, name) > 0]


class FlexMatchThresholds:
    """FlexMatch's per-class confidence thresholds (Zhang et al. 2021), from a memory of every unlabelled image.

    ``memory[i]`` is the last class unlabelled image i was predicted with confidence >= tau (-1: never
    yet). A class's learning effect beta is its count of such images over the largest count, the
    never-confident ones included (FlexMatch's warm-up), and its threshold is tau * beta / (2 - beta):
    low for the classes the model is slow to pick up, up to tau for the most confident one. Everything
    is counted on the device, with no host synchronisation.
    """

    def __init__(self, n_unlabelled: int, num_classes: int, tau: float, device: Any) -> None:
        self.tau, self.num_classes = tau, num_classes
        self.memory = torch.full((n_unlabelled,), -1, dtype=torch.int64, device=device)

    def thresholds(self, pos: torch.Tensor, conf: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """The thresholds (N,) for the images at ``pos`` predicted ``label`` with ``conf``; then remembers them."""
        memory = self.memory
        counts = torch.zeros(self.num_classes + 1, device=memory.device).index_add_(
            0, memory + 1, torch.ones_like(memory, dtype=torch.float32))  # (1 + classes,): never-confident first
        beta = counts[1:] / counts.max()
        thresholds = self.tau * beta / (2 - beta)
        memory[pos] = torch.where(conf >= self.tau, label, memory[pos])  # after reading: counts from the next step
        return thresholds[label]

    def state_dict(self) -> torch.Tensor:
        return self.memory.cpu()

    def load_state_dict(self, memory: torch.Tensor) -> None:
        self.memory.copy_(memory)
