"""Virtual Adversarial Training (Miyato et al., 2016 / TPAMI 2018) and entropy minimisation.

The local distributional smoothness (LDS) of a classifier at x is

    LDS(x) = KL( p(y | x) || p(y | x + r_adv) ),   r_adv = argmax_{||r||_2 <= eps} KL(...)

where p(y | x) is held fixed (detached). Near r = 0 the KL is ~ 0.5 r^T H r, so r_adv is eps times
the top eigenvector of the Hessian H, found by power iteration with one finite difference per
iteration:  d <- normalise( grad_r KL(p(x) || p(x + xi d)) ).

Everything here works for any input shape (N, ...) and any model that returns logits (N, C).
The perturbation passes leave the model exactly as they found it: no parameter gradient is
computed, and every buffer (BatchNorm running statistics and counters, of any norm layer type)
is restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_XI",
    "balance_loss",
    "entropy_loss",
    "EntropyLoss",
    "l2_normalize",
    "lds_and_logits",
    "preserved_buffers",
    "vat_loss",
    "VATLoss",
    "vat_perturbation",
]

# The paper's xi = 1e-6 is below float32 resolution for inputs in [0, 1]: ||xi d||_2 = 1e-6
# spread over 784 pixels is ~4e-8 per pixel, under the 6e-8 spacing of float32 numbers near 1,
# so x + xi d rounds back to x for most pixels and the "finite difference" is mostly rounding
# noise. xi = 1e-3 moves pixels by ~4e-5 (~600 float32 steps, so ~0.2% rounding error) while
# staying ~1000x below the eps used in training, where the KL is still quadratic in r.
# tests/test_vat.py::test_default_xi_float32_matches_float64 checks the direction against float64.
DEFAULT_XI = 1e-3

REDUCTIONS = {"mean": torch.mean, "sum": torch.sum, "none": lambda t: t}  # of per-sample losses (N,)


def l2_normalize(d: torch.Tensor) -> torch.Tensor:
    """Scale each sample of ``d`` (N, ...) to unit L2 norm; all-zero samples stay zero.

    Dividing by the max-abs first keeps the squared norm away from float underflow/overflow
    (a gradient of 1e-30 or 1e30 still normalises correctly); clamping by the smallest normal
    number means a zero sample gives 0 / tiny = 0, never NaN or inf.
    """
    flat = d.flatten(1)  # (N, D)
    tiny = torch.finfo(flat.dtype).tiny
    flat = flat / flat.abs().amax(dim=1, keepdim=True).clamp_min(tiny)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(tiny)
    return flat.view_as(d)


@contextlib.contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every buffer of ``model`` on exit (BatchNorm running stats, counters, ...).

    Snapshotting all buffers, instead of special-casing BatchNorm classes, covers any norm
    layer (BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm with running stats, user layers).
    The restore writes through ``.data`` so that it does not bump autograd's version counter:
    BatchNorm records its running stats for backward, and a bumped counter would make a graph
    that went through the layer unusable. That is safe because train-mode backward uses the
    batch statistics, and in eval mode the running stats were never changed.
    """
    saved = [(buf, buf.detach().clone()) for buf in model.buffers()]
    try:
        yield
    finally:
        for buf, value in saved:
            buf.data.copy_(value)


LOW_PRECISION = (torch.float16, torch.bfloat16)


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32 and float64 unchanged."""
    return t.float() if t.dtype in LOW_PRECISION else t


def _kl_div_logits(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p || q) from logits, (N, C) -> (N,), computed in float32 at least. Zero when p == q, up to rounding."""
    p_logits, q_logits = _at_least_float32(p_logits), _at_least_float32(q_logits)
    p_log = F.log_softmax(p_logits, dim=1)
    q_log = F.log_softmax(q_logits, dim=1)
    return (p_log.exp() * (p_log - q_log)).sum(dim=1)


def _check_args(x: torch.Tensor, eps: float, xi: float, n_power: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, ...) with N >= 1 and at least one feature dim, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (images scaled to [0, 1]), got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf values")
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (L2 radius of the perturbation), got {eps}")
    if not xi > 0:
        raise ValueError(f"xi must be > 0 (finite-difference step of the power iteration), got {xi}")
    if int(n_power) != n_power or n_power < 1:
        raise ValueError(f"n_power must be an integer >= 1 (power iterations), got {n_power}")


def _clean_logits(model: nn.Module, x: torch.Tensor, logits: Optional[torch.Tensor]) -> torch.Tensor:
    given = logits is not None
    if logits is None:
        with torch.no_grad():
            logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{'logits' if given else 'the model output'} must have shape (N, C) with N = {x.shape[0]}, "
                         f"got {shape}")
    return logits.detach()


def vat_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    xi: float = DEFAULT_XI,
    n_power: int = 1,
    logits: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Virtual adversarial perturbation r_adv of ``x``: same shape as ``x``, L2 norm ``eps`` per sample.

    Args:
        model: maps x (N, ...) to logits (N, C). Used in whatever mode it is in; its
            parameters' ``.grad`` and all its buffers are left untouched.
        x: inputs (N, ...), floating point.
        eps: L2 norm of the returned perturbation, per sample.
        xi: finite-difference step of the power iteration (see ``DEFAULT_XI``).
        n_power: number of power iterations (1 is the paper's choice and usually enough).
        logits: clean logits ``model(x)`` (N, C) if already computed; they are detached. They
            must come from a pass like the perturbed ones (same batch, same mode), or the KL is
            not minimal at r = 0 and the direction is biased.

    Returns:
        r_adv (N, ...), detached. A sample whose KL gradient is exactly zero (e.g. a saturated
        or constant model) keeps its random direction, so the norm is always ``eps``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> r = vat_perturbation(model, torch.rand(5, 1, 2, 2), eps=2.0)
        >>> r.shape, bool(torch.allclose(r.flatten(1).norm(dim=1), torch.full((5,), 2.0)))
        (torch.Size([5, 1, 2, 2]), True)
    """
    _check_args(x, eps, xi, n_power)
    x = x.detach()
    with preserved_buffers(model):
        return _power_iteration(model, x, _clean_logits(model, x, logits), eps, xi, n_power)


def _power_iteration(model: nn.Module, x: torch.Tensor, p_logits: torch.Tensor, eps: float, xi: float,
                     n_power: int) -> torch.Tensor:
    """r_adv for checked arguments, detached x and clean logits; the caller guards the buffers.

    Always in float32, even inside ``torch.autocast``: in bfloat16 x + xi * d rounds back to x
    (spacing 2^-8 near 1), and in float16 the KL gradient underflows, so the direction would be
    noise. Only this finite difference needs the precision; the other passes may run in autocast
    (under autocast it costs one extra float32 forward pass, for its own clean logits).
    """
    # Logits from a reduced-precision pass are off by its rounding (~1e-3), which would dominate the
    # O(xi^2) KL: the finite difference then needs its own float32 clean pass.
    reduced = p_logits.dtype in LOW_PRECISION or torch.is_autocast_enabled(x.device.type)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = _at_least_float32(x)
        if reduced:
            with torch.no_grad():
                p_logits = model(x)
        d = l2_normalize(torch.randn_like(x))
        for _ in range(int(n_power)):
            d.requires_grad_(True)
            with torch.enable_grad():
                kl = _kl_div_logits(p_logits, model(x + xi * d)).sum()
                # Only the input gradient: autograd.grad w.r.t. d prunes the weight-gradient
                # computations and never touches parameter .grad.
                (grad,) = torch.autograd.grad(kl, d)
            new_d = l2_normalize(grad.detach())
            # Zero gradient for a sample -> keep its previous (random) direction.
            nonzero = new_d.flatten(1).abs().amax(dim=1) > 0
            d = torch.where(nonzero.view(-1, *([1] * (x.dim() - 1))), new_d, d.detach())
    return eps * d


def lds_and_logits(model: nn.Module, x: torch.Tensor, logits: torch.Tensor, *, eps: float, xi: float = DEFAULT_XI,
                   n_power: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-sample KL(p(x) || p(x + r_adv)) (N,) and the logits of the perturbed pass (N, C), with no argument checks:
    the hot path of training.

    ``vat_loss`` checks its arguments first; that check reads the data on the host (one synchronisation per call
    on a GPU), so a training loop whose inputs it made itself calls this. ``logits`` are the clean logits; the
    buffers of ``model`` are restored afterwards. Terms after VAT's may reuse the perturbed logits.
    """
    x, p_logits = x.detach(), logits.detach()
    with preserved_buffers(model):
        return _lds(model, x, p_logits, eps, xi, n_power)


def _lds(model: nn.Module, x: torch.Tensor, p_logits: torch.Tensor, eps: float, xi: float,
         n_power: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-sample LDS and perturbed logits for detached x and clean logits; the caller guards the buffers."""
    r_adv = _power_iteration(model, x, p_logits, eps, xi, n_power)
    q_logits = model(x + r_adv)
    return _kl_div_logits(p_logits, q_logits), q_logits


def vat_loss(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    xi: float = DEFAULT_XI,
    n_power: int = 1,
    logits: Optional[torch.Tensor] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Local distributional smoothness: mean over the batch of KL(p(x) || p(x + r_adv)).

    Gradients flow into the model through the perturbed pass only; p(x) is a fixed target.
    Arguments are those of :func:`vat_perturbation`, plus ``reduction``: ``"mean"`` (a scalar,
    the default), ``"sum"``, or ``"none"`` for the per-sample KL (N,). Buffers are unchanged by
    every pass made here.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> loss = vat_loss(model, torch.rand(5, 1, 2, 2), eps=2.0)
        >>> loss.dim(), bool(loss >= 0)
        (0, True)
    """
    _check_args(x, eps, xi, n_power)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is invalid; allowed: {', '.join(REDUCTIONS)}")
    x = x.detach()
    with preserved_buffers(model):  # one snapshot covers the clean pass and the perturbed ones
        return REDUCTIONS[reduction](_lds(model, x, _clean_logits(model, x, logits), eps, xi, n_power)[0])


class VATLoss(nn.Module):
    """Module wrapper of :func:`vat_loss`: ``VATLoss(eps=2.5)(model, x, logits=None)``."""

    def __init__(self, eps: float, xi: float = DEFAULT_XI, n_power: int = 1) -> None:
        super().__init__()
        _check_args(torch.zeros(1, 1), eps, xi, n_power)
        self.eps, self.xi, self.n_power = eps, xi, n_power

    def forward(self, model: nn.Module, x: torch.Tensor, logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        return vat_loss(model, x, eps=self.eps, xi=self.xi, n_power=self.n_power, logits=logits)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, xi={self.xi}, n_power={self.n_power}"


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean prediction entropy H(p(y|x)) of logits (N, C), in nats; minimising it sharpens predictions.

    Example:
        >>> float(entropy_loss(torch.zeros(2, 4))) == float(torch.log(torch.tensor(4.0)))
        True
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


class EntropyLoss(nn.Module):
    """Module wrapper of :func:`entropy_loss`."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return entropy_loss(logits)


def balance_loss(logits: torch.Tensor) -> torch.Tensor:
    """KL(mean prediction || uniform) over a batch of logits (N, C), in nats; 0 when classes are used equally.

    Entropy minimisation alone can let one class swallow a cluster of another for good; this term
    (the marginal-entropy half of IMSAT's mutual information, Hu et al. 2017) pushes the batch's
    average prediction towards the class-balanced prior that the labelled set is drawn with.

    Example:
        >>> float(balance_loss(torch.zeros(4, 3)))
        0.0
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    mean_p = F.softmax(logits, dim=1).mean(dim=0)  # (C,)
    return (mean_p * (mean_p.clamp_min(torch.finfo(mean_p.dtype).tiny).log() + math.log(logits.shape[1]))).sum()
