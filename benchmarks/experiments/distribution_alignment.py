"""An experiment: distribution alignment of the pseudo-labels (ReMixMatch, Berthelot et al. 2020), as a term ``pseudo_da``.

    python benchmarks/screen.py '{"da": {"pseudo_weight": 0.0, "term_weights": {"pseudo_da": 1.0}}}' \
        --experiment benchmarks/experiments/distribution_alignment.py --draws 3,8

The default's pseudo-label term (FixMatch with FlexMatch's thresholds) with one change: before the
threshold and the argmax, each clean prediction p is multiplied by prior / running mean of p over the
last ``WINDOW`` unlabelled batches, and renormalised. The prior is the labelled draw's class
proportions (uniform for 10 per class). A class the model over-predicts (a sub-mode of 4s taken for
9s makes 9 over-predicted) is scaled down in every pseudo-label, so the unlabelled set's class
proportions, as a whole, correct the labelled draw's bias. Run it with ``pseudo_weight=0`` so the
built-in term does not run beside it.
"""

from __future__ import annotations

import torch

import vatlib
from vatlib.terms import pseudo_label_loss

WINDOW = 128  # unlabelled batches in the running mean of the predictions (ReMixMatch's)


class Alignment:
    """The running mean of the clean predictions over the last WINDOW batches, and the labelled prior."""

    def __init__(self, run) -> None:
        counts = torch.bincount(run.train_labels[run.labelled], minlength=run.num_classes).float()
        self.prior = counts / counts.sum()
        self.history = self.prior.repeat(WINDOW, 1)  # (WINDOW, C): starts at the prior (no correction)
        self.i = 0

    def align(self, p: torch.Tensor) -> torch.Tensor:
        """p (N, C) scaled by prior / running mean, renormalised; then the batch's mean joins the window."""
        self.history[self.i % WINDOW] = p.mean(0)
        self.i += 1
        q = p * (self.prior / self.history.mean(0).clamp_min(1e-6))
        return q / q.sum(1, keepdim=True)


def aligned_pseudo_term(run, u) -> torch.Tensor:
    """The built-in pseudo-label term, on aligned clean predictions (the alignment's state lives on the run)."""
    if not hasattr(run, "alignment"):
        run.alignment = Alignment(run)
    with torch.no_grad():
        probs = run.alignment.align(u.logits.detach().float().softmax(dim=1))
    return pseudo_label_loss(run, u.pos, probs)


vatlib.register_term("pseudo_da", aligned_pseudo_term, clean_grad=False)
