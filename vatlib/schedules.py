"""Learning-rate schedules: what ``TrainConfig.lr_schedule`` names, and the way to add one (``register_schedule``).

A schedule gives the factor of ``TrainConfig.lr`` after t of a run's ``steps`` updates, and may move Adam's beta1 too
(the VAT authors' later code drops it from 0.9 to 0.5 when the rate starts to decay). Experiments register theirs
from their own files (``benchmarks/experiments/``); a schedule enters this module once it wins on validation.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, NamedTuple, Optional

__all__ = ["SCHEDULES", "Schedule", "register_schedule"]

Factor = Callable[[int, int], float]  # (t, steps) -> a number


class Schedule(NamedTuple):
    lr: Factor  # (t, steps) -> the factor of TrainConfig.lr after t updates (the rate of update t + 1)
    beta1: Optional[Factor] = None  # (t, steps) -> Adam's beta1 for update t + 1; None: AdamW's 0.9 throughout


SCHEDULES: Dict[str, Schedule] = {
    "cosine": Schedule(lambda t, steps: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))),  # to 0 at the end
    "paper": Schedule(lambda t, steps: 0.9 ** (t // 500)),  # the VAT authors' MNIST code: x0.9 per 500-update epoch
}
BUILT_IN = tuple(SCHEDULES)


def register_schedule(name: str, lr: Factor, *, beta1: Optional[Factor] = None) -> None:
    """Add a schedule that ``TrainConfig(lr_schedule=name)`` uses: ``lr(t, steps)`` is the factor of the peak rate
    after t updates, ``beta1(t, steps)`` (optional) Adam's beta1 for the next update. Registering a name again
    replaces it (a re-run notebook cell); a built-in name is refused.

    Example:
        >>> register_schedule("hold-then-linear", lambda t, steps: min(1.0, 2 * (1 - t / steps)))
        >>> [SCHEDULES["hold-then-linear"].lr(t, 100) for t in (0, 50, 75, 100)]
        [1.0, 1.0, 0.5, 0.0]
        >>> del SCHEDULES["hold-then-linear"]
    """
    if name in BUILT_IN:
        raise ValueError(f"schedule name {name!r} is taken by a built-in schedule; built-in: {list(BUILT_IN)}")
    if not callable(lr) or (beta1 is not None and not callable(beta1)):
        raise TypeError("lr (and beta1, if given) must be callable (t, steps) -> number")
    SCHEDULES[name] = Schedule(lr, beta1)
