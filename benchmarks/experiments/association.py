"""An experiment: learning by association (Haeusser et al., CVPR 2017), as a loss term ``assoc``.

    python benchmarks/screen.py '{"assoc": {"term_weights": {"assoc": 1.0}}}' \\
        --experiment benchmarks/experiments/association.py --draws 3,8

Each step embeds a fresh labelled batch and the unlabelled batch (penultimate features) and lets a walker go
from each labelled image to the unlabelled images and back, with transition probabilities given by a softmax over
the dot products of their embeddings. The walker loss asks the round trip to end in the class it started from
(uniformly over that class's images in the batch): an unlabelled image is used as a stepping stone only between
images of one class. The visit loss asks every unlabelled image to be visited equally often from the labelled
batch, so no region of the unlabelled data is left out, whatever the labelled draw made of it. Both read the
unlabelled batch as a whole, where the pseudo-labels read it image by image. The term costs one more pass with
gradient over the unlabelled batch (the clean logits come without their features) and one over a labelled batch.
"""

from __future__ import annotations

import math

import torch

import vatlib

VISIT_WEIGHT = 0.5  # the paper's MNIST setting (the walker loss weighs 1)


def association_losses(emb_l: torch.Tensor, labels: torch.Tensor, emb_u: torch.Tensor):
    """(walker loss, visit loss) for labelled embeddings (L, D) with ``labels`` (L,) and unlabelled ones (U, D).

    Example: two labelled images of different classes, each with its own unlabelled twin; a walk that goes
    to the twin and back scores far better than one over embeddings that mix the classes.
        >>> labels = torch.tensor([0, 1])
        >>> good = association_losses(torch.eye(2) * 5, labels, torch.eye(2) * 5)
        >>> bad = association_losses(torch.eye(2) * 5, labels, torch.ones(2, 2) * 5)
        >>> bool(good[0] < 0.01 < bad[0]), round(float(bad[0]), 4)  # the walker loss: log 2 when mixed
        (True, 0.6931)
    """
    sim = emb_l.float() @ emb_u.float().T  # (L, U)
    p_lu = sim.softmax(dim=1)  # labelled -> unlabelled
    p_ul = sim.T.softmax(dim=1)  # unlabelled -> labelled
    p_lul = p_lu @ p_ul  # (L, L): round trips
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    walker = -(target * p_lul.clamp_min(1e-8).log()).sum(dim=1).mean()
    visit_p = p_lu.mean(dim=0)  # (U,): how often each unlabelled image is visited
    visit = -(visit_p.clamp_min(1e-8).log()).mean() - math.log(len(visit_p))  # KL(uniform || visit)
    return walker, visit


def association_term(run, u) -> torch.Tensor:
    xl, yl = run.batch(run.labelled, run.cfg.batch_labelled)
    walker, visit = association_losses(run.model.embed(xl), yl, run.model.embed(u.x))
    return walker + VISIT_WEIGHT * visit


vatlib.register_term("assoc", association_term, clean_grad=False)
