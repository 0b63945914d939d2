"""One training run in memory: ``Run`` holds its state and does its step and its evaluation.

Everything the remaining steps depend on lives in a ``Run`` (model, optimiser, schedule, weight
average, random generators, the loss terms' state, history, best, loss sums), and ``state_dict()`` /
``load_state_dict()`` are the one definition of the training state that ``last.pth`` holds. Files,
resuming and Ctrl-C are ``vatlib.runs``'s business.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .augment import random_stroke, view
from .checkpoint import cpu_state_dict
from .config import TrainConfig
from .data import ImageData, Split, to_float
from .inference import evaluate
from .model import EXTRA_MODELS, build_model
from .schedules import SCHEDULES
from .terms import TermContext, active_terms, all_terms, term_weight

__all__ = ["FiniteGuard", "ModelArg", "Run", "WeightAverage", "compile_model", "make_model"]

# A model of your own for ``train``: a module, or what builds one (a class, a function of no arguments).
ModelArg = Union[nn.Module, Callable[[], nn.Module], None]


class WeightAverage:
    """Exponential moving average of the parameters (what is evaluated and saved); buffers follow the live model."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # warm-up: early averages are not dominated by the init
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1 - decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


def compile_model(model: nn.Module, device: torch.device) -> bool:
    """``model.compile()`` in place if torch.compile works on ``device``; else warn once and stay eager.

    torch.compile fails lazily, at the first call, when no C++ compiler (CPU) or Triton (GPU) is usable,
    so a two-op probe is compiled and run first. Returns whether the model was compiled.
    """
    try:
        probe = torch.compile(lambda t: t * 2 + 1, dynamic=False)
        probe(torch.ones(8, device=device))
    except Exception as e:  # noqa: BLE001 -- any failure of the compiler stack means "use eager"
        first = (str(e).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"compile=True but torch.compile does not work here ({type(e).__name__}: {first}); "
                      f"training in eager mode instead", RuntimeWarning, stacklevel=3)
        return False
    model.compile(dynamic=False)
    return True


class FiniteGuard:
    """No update from a non-finite loss. On the CPU: a FloatingPointError at once. On a GPU, without waiting for
    the device: the fused AdamW skips that update there (``found_inf``, the protocol of torch's GradScaler), the
    first such step is remembered there, and ``check_deferred`` raises at the next evaluation, before any save."""

    def __init__(self, opt: torch.optim.Optimizer, device: torch.device) -> None:
        self.opt, self.deferred = opt, device.type == "cuda"
        self.first_bad_step = torch.zeros((), dtype=torch.int64, device=device)  # 0: none yet

    def guard(self, loss: torch.Tensor, losses: Dict[str, torch.Tensor], step: int) -> None:
        if not self.deferred:
            if not torch.isfinite(loss):
                terms = ", ".join(f"{n} {v.item():.4g}" for n, v in losses.items())
                raise FloatingPointError(f"step {step}: loss is {loss.item()} ({terms}); training stopped before "
                                         f"this update. Lower lr or eps.")
            return
        bad = ~torch.isfinite(loss)
        self.opt.found_inf = bad.float()
        self.first_bad_step = torch.where(bad & (self.first_bad_step == 0), step, self.first_bad_step)

    def check_deferred(self, step: int) -> None:
        """Raise for a non-finite loss that ``guard`` deferred (one host synchronisation)."""
        if self.deferred and int(self.first_bad_step):
            raise FloatingPointError(f"step {int(self.first_bad_step)}: loss is not finite; its update (and any later "
                                     f"non-finite one) was skipped, and training stopped at step {step}, before "
                                     f"saving. Lower lr or eps.")


def make_model(cfg: TrainConfig, data: ImageData, model: ModelArg = None) -> nn.Module:
    """The model a run trains, its weights drawn under ``cfg.seed`` (the caller seeds torch first).

    None: vatlib's own, as ``cfg.model`` says, sized for the data's images and classes. A class or a function of
    no arguments: called now, so the seed draws its weights. A module: its weights are drawn afresh now, by every
    submodule's ``reset_parameters()`` (what torch's layers call when they are built); a parameter of a module
    without one keeps its value. Either way the same seed gives the same initial weights.
    """
    channels, height, width = data.image_shape
    num_classes = int(data.train_labels.max()) + 1
    if model is None and cfg.model in EXTRA_MODELS:
        model = EXTRA_MODELS[cfg.model](num_classes, (channels, height, width))
    elif model is None:
        shape = (dict(width=cfg.width, pool_first=cfg.pool_first, final_blocks=cfg.final_blocks, in_channels=channels)
                 if cfg.model == "convnet" else dict(in_features=channels * height * width))
        return build_model(cfg.model, num_classes=num_classes, **shape)
    elif not isinstance(model, nn.Module):
        if not callable(model):
            raise TypeError(f"model must be an nn.Module, or a class or function that builds one; got "
                            f"{type(model).__name__}")
        model = model()
        if not isinstance(model, nn.Module):
            raise TypeError(f"the model factory returned {type(model).__name__}, not an nn.Module")
    else:
        for module in model.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"the model ({type(model).__name__}) has no trainable parameters")
    return model


def check_model_output(model: nn.Module, images: torch.Tensor, num_classes: int) -> None:
    """Raise a ValueError unless ``model`` maps a few images (N, C, H, W) to logits (N, num_classes)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(images)
    except Exception as e:  # noqa: BLE001 -- any failure here means the model does not take these images
        raise ValueError(f"the model ({type(model).__name__}) fails on images of shape {tuple(images.shape)} "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:300]}); it must map (N, C, H, W) floats "
                         f"in [0, 1] to logits (N, {num_classes})") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(images), num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model ({type(model).__name__}) returns {got} for images {tuple(images.shape)}; "
                         f"expected logits ({len(images)}, {num_classes}), one per class of the data")


class Run:
    """The state of one training run, and the two things done to it: a step and an evaluation.

    Callbacks given to ``train`` receive it: ``run.step``, ``run.history`` (one row per evaluation),
    ``run.model``, ``run.eval_model``, and ``run.request_stop()`` to end the run after this step.
    """

    def __init__(self, cfg: TrainConfig, data: ImageData, split: Split, device: torch.device,
                 data_info: Optional[Dict[str, Any]] = None, model: ModelArg = None) -> None:
        self.cfg, self.data, self.split, self.device = cfg, data, split, device
        self.data_info = data_info if data_info is not None else data.fingerprint()  # hashes the data: pass it once
        if cfg.stroke_p > 0 and data.image_shape[0] != 1:
            raise ValueError(f"TrainConfig.stroke_p={cfg.stroke_p} draws a pen stroke, on single-channel images only; "
                             f"these images have {data.image_shape[0]} channels: set stroke_p=0")
        torch.manual_seed(cfg.seed)  # model init and VAT's random directions
        # Batches and views: on a GPU drawn there, from a generator of its own, so a step never waits for a copy.
        self.gen = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(cfg.seed)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.num_classes = int(data.train_labels.max()) + 1
        built = make_model(cfg, data, model)
        if model is not None:  # a model of one's own: does it take these images and give one logit per class?
            check_model_output(built, to_float(data.train_images[:2]), self.num_classes)
        self.model = built.to(device).to(memory_format=self.memory_format)
        if hasattr(self.model, "check_inputs"):
            self.model.check_inputs = False  # the images are made here; the model checks users' images again after
        # fused=True on a GPU: one kernel per step, and it can skip a non-finite update on the device.
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     fused=True if device.type == "cuda" else None)
        self.schedule = SCHEDULES[cfg.lr_schedule]
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda t: self.schedule.lr(t, cfg.steps))
        self._set_beta1(0)
        self.ema = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        if cfg.compile:  # after the average's copy: the average is only evaluated, in eager mode
            compile_model(self.model, device)
        self.train_images, self.train_labels = data.train_images.to(device), data.train_labels.to(device)
        self.labelled, self.unlabelled = split.labelled.to(device), split.unlabelled.to(device)
        if cfg.all_labels:  # the fully supervised reference: every non-validation image is a labelled one
            self.labelled = torch.cat([self.labelled, self.unlabelled])
        self.val_images, self.val_labels = data.train_images[split.validation], data.train_labels[split.validation]
        self.all_terms = all_terms(cfg)
        self.terms = active_terms(cfg) if len(split.unlabelled) else []  # the unlabelled terms in use
        self.term_state = {name: {k: t.to(device) for k, t in
                                  self.all_terms[name].init_state(len(self.unlabelled), self.num_classes).items()}
                           for name in self.terms if self.all_terms[name].init_state is not None}
        self.loss_names = ("sup", *self.all_terms)
        self.step, self.since, self.stop_requested = 0, 0, False  # updates done; steps in loss_sums
        self.history: List[Dict[str, float]] = []
        self.best = {"step": 0, "val_acc": -1.0, "test_acc": float("nan")}
        self.loss_sums = {name: torch.zeros((), device=device) for name in self.loss_names}  # since the last evaluation
        self.finite = FiniteGuard(self.opt, device)
        self._t0 = time.perf_counter()

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated, saved and returned: the weight average if there is one."""
        return self.ema.model if self.ema is not None else self.model

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self._t0

    def request_stop(self) -> None:
        """End the run after the current step, saving the state to resume from (as Ctrl-C does)."""
        self.stop_requested = True

    def _draw(self, n: int, size: int) -> torch.Tensor:
        """``size`` positions in range(n), drawn with replacement by the batch generator, on the run's device."""
        return torch.randint(n, (size,), generator=self.gen, device=self.gen.device).to(self.device)

    def batch(self, indices: torch.Tensor, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``size`` images of ``indices`` drawn with replacement, each freshly viewed (size, C, H, W), and labels."""
        return self.views(indices[self._draw(len(indices), size)])

    def views(self, pick: torch.Tensor, strong: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """The training images ``pick``, each freshly viewed, and their labels; ``strong``: the pseudo-labels' view."""
        c = self.cfg
        args = (c.strong_shift, c.strong_rotate, c.strong_scale) if strong else (c.max_shift, c.max_rotate, c.max_scale)
        x = view(self.train_images[pick], *args, self.gen)
        return x.contiguous(memory_format=self.memory_format), self.train_labels[pick]

    def weight(self, name: str) -> float:
        """The weight of unlabelled term ``name`` at this step, ramp-up included."""
        ramp = min(1.0, self.step / self.cfg.rampup_steps) if self.cfg.rampup_steps else 1.0
        return ramp * term_weight(self.cfg, name)

    def losses(self) -> Dict[str, torch.Tensor]:
        """Every loss term active at this step on fresh batches, by name."""
        xl, yl = self.batch(self.labelled, self.cfg.batch_labelled)
        xl = random_stroke(xl, self.cfg.stroke_p, generator=self.gen)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp):
            losses = {"sup": F.cross_entropy(self.model(xl), yl)}
            terms = {name: self.all_terms[name] for name in self.terms if self.weight(name) > 0}
            if not terms:
                return losses
            index = self._draw(len(self.unlabelled), self.cfg.batch_unlabelled)
            xu = self.views(self.unlabelled[index])[0]
            strong = self.views(self.unlabelled[index], strong=True)[0] if any(t.strong_view for t in terms.values()) else None
            # The clean pass on a batch of its own: its BatchNorm statistics are those of the perturbed
            # passes inside the VAT loss, so the KL is truly minimal at r = 0.
            with torch.set_grad_enabled(any(term.clean_grad for term in terms.values())):
                logits = self.model(xu)
            adv_logits = None  # VAT's perturbed pass, for the terms after it
            for name, term in terms.items():
                ctx = TermContext(self.model, xu, logits if term.clean_grad else logits.detach(), index, self.step,
                                  self.term_state.get(name, {}), strong if term.strong_view else None, adv_logits)
                losses[name] = term.fn(ctx)
                adv_logits = ctx.adv_logits
        return losses

    def train_step(self) -> None:
        """One optimiser update on fresh batches."""
        self.step += 1
        losses = self.losses()
        loss = losses["sup"] + sum(self.weight(name) * value for name, value in losses.items() if name != "sup")
        self.finite.guard(loss, losses, self.step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self._set_beta1(self.step)
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        for name, value in losses.items():
            self.loss_sums[name] += value.detach()
        self.since += 1

    def _set_beta1(self, t: int) -> None:
        """Adam's beta1 for update t + 1, where the schedule moves it."""
        if self.schedule.beta1 is not None:
            beta1 = float(self.schedule.beta1(t, self.cfg.steps))
            for group in self.opt.param_groups:
                group["betas"] = (beta1, group["betas"][1])

    def evaluate(self) -> Dict[str, float]:
        """Validation (and, for reporting, test) accuracy of ``eval_model`` now: a new history row; updates ``best``."""
        self.finite.check_deferred(self.step)
        val_acc = evaluate(self.eval_model, self.val_images, self.val_labels)
        test_acc = (evaluate(self.eval_model, self.data.test_images, self.data.test_labels) if self.cfg.report_test
                    else float("nan"))
        self.model.train()
        row = {"step": self.step, "time_s": round(self.elapsed_s, 2), "lr": self.sched.get_last_lr()[0],
               **{f"loss_{n}": (self.loss_sums[n] / self.since).item() for n in self.loss_names},
               "val_acc": val_acc, "test_acc": test_acc}
        self.history.append(row)
        for total in self.loss_sums.values():
            total.zero_()
        self.since = 0
        # ">=": among equal scores the later model (lower lr, longer average); no validation split: the last one.
        if val_acc >= self.best["val_acc"] or (math.isnan(val_acc) and self.step == self.cfg.steps):
            self.best = {"step": self.step, "val_acc": val_acc, "test_acc": test_acc}
        return row

    def state_dict(self) -> Dict[str, Any]:
        """Everything the remaining steps depend on, at a step boundary: the ``resume`` entry of ``last.pth``."""
        cuda = self.device.type == "cuda"
        return {"step": self.step, "model_state": cpu_state_dict(self.model), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "ema_state": cpu_state_dict(self.ema.model) if self.ema else None,
                "rng_cpu": torch.get_rng_state(), "rng_batches": self.gen.get_state(),
                "rng_cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
                "term_state": {name: {k: t.cpu().clone() for k, t in state.items()}
                               for name, state in self.term_state.items()},
                "history": self.history, "best": self.best, "since": self.since, "elapsed_s": self.elapsed_s,
                "loss_sums": {n: t.cpu().clone() for n, t in self.loss_sums.items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a ``state_dict()``, so that the next step is the one the saved run would have taken."""
        self.model.load_state_dict(state["model_state"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.model.load_state_dict(state["ema_state"])
        torch.set_rng_state(state["rng_cpu"])
        self.gen.set_state(state["rng_batches"])
        if self.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        for name, tensors in self.term_state.items():
            for k, t in tensors.items():
                t.copy_(state["term_state"][name][k])
        self.history, self.best = list(state["history"]), dict(state["best"])
        for name, total in self.loss_sums.items():
            total.copy_(state["loss_sums"][name])
        self.step, self.since = int(state["step"]), int(state["since"])
        self._t0 = time.perf_counter() - float(state["elapsed_s"])

