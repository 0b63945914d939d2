"""An experiment's own loss term, plugged in without touching the library: IMSAT's mutual information.

    python benchmarks/screen.py '{"mi0.3": {"term_weights": {"mi": 0.3}}}' \
        --experiment benchmarks/experiments/example_term.py --draws 3,8

Importing this file registers the term ``mi``; a run uses it when ``TrainConfig.term_weights`` gives
it a weight. The term is the negative mutual information between an unlabelled image and its
predicted class over the batch (Hu et al. 2017, IMSAT): -(H(mean prediction) - mean H(prediction)).
Maximising it asks for confident predictions (the entropy-minimisation half) whose classes are used
evenly across the batch (the marginal-entropy half, which keeps one class from swallowing another).
It trains through the clean pass, so it registers with ``clean_grad=True``.

Screened on validation (docs/EXPERIMENTS.md, 2026-12-03): level with the default on its weakest
draws (weight 0.3: 98.9 / 99.2 % on draws 3 / 8, the default's own figures; weight 1: 99.0 / 99.3 %,
one image ahead on each), so it stays out of the library and is kept here as the example of
``vatlib.register_term``.
"""

from __future__ import annotations

import torch

import vatlib


def mutual_information_loss(logits: torch.Tensor) -> torch.Tensor:
    """-(H(mean p) - mean H(p)) for logits (N, C), in nats: between -log C (best) and 0.

    Example:
        >>> round(float(mutual_information_loss(torch.eye(4) * 50)), 4)  # four confident, different classes
        -1.3863
        >>> float(mutual_information_loss(torch.zeros(3, 4)))  # uniform predictions carry no information
        0.0
    """
    log_p = logits.float().log_softmax(dim=1)  # (N, C)
    p = log_p.exp()
    mean_p = p.mean(dim=0)  # (C,)
    marginal = -(mean_p * mean_p.clamp_min(1e-12).log()).sum()
    conditional = -(p * log_p).sum(dim=1).mean()
    return conditional - marginal


vatlib.register_term("mi", lambda ctx: mutual_information_loss(ctx.logits), clean_grad=True)
