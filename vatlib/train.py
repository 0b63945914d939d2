"""Training: supervised cross-entropy on the labelled 100, plus VAT (and entropy minimisation) on the rest.

``train(TrainConfig(...))`` runs one experiment end to end: it draws the split, trains, evaluates
on validation and test every ``eval_every`` steps, keeps the best-on-validation checkpoint (written
atomically) and returns the model, the history and the numbers. The test set is evaluated for
reporting only; nothing is ever chosen by it.

Interrupting is safe: at every evaluation ``last.pth`` receives the full training state (weights,
optimiser, schedule, weight average, random generators), and Ctrl-C (SIGINT) stops at the end of
the current step after writing it. ``train(config, resume=True)`` (``--resume`` on the command
line) continues from it, and on the CPU ends with the same weights and metrics as a run that was
never interrupted.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, cpu_state_dict, load_checkpoint, save_checkpoint
from .data import DATASETS, ImageData, load_dataset, random_affine, random_translate, split_train, to_float
from .model import MODELS, build_model
from .vat import DEFAULT_XI, balance_loss, entropy_loss, vat_loss

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "TrainingInterrupted", "evaluate", "predict", "preset_config",
           "resolve_device", "train"]


@dataclass
class TrainConfig:
    """Every knob of one run. Defaults are the recipe ``python -m vatlib train`` uses."""

    # data
    dataset: str = "MNIST"  # one of vatlib.DATASETS
    data_root: str = "data"  # holds <dataset>/raw/ in torchvision's layout
    per_class: int = 10  # labelled images per class: 100 labels for the 10 classes
    n_validation: int = 1000  # labelled hold-out for checkpoint choice only (1,000 as in the original VAT MNIST code)
    data_seed: int = 0  # draws the labelled/validation split; separate from `seed` so one split can be trained many ways
    seed: int = 0  # model init, batch order, augmentation and VAT's random directions
    # model
    model: str = "convnet"  # one of vatlib.MODELS
    width: int = 16  # channels of the first conv (then 2x, 4x); 16 keeps a VAT step ~60 ms on 2 CPU cores
    # optimisation
    steps: int = 3000  # optimiser updates; ~4 min on a 2-core laptop CPU with the defaults
    batch_labelled: int = 32  # drawn with replacement from the 100 labelled images, each one freshly augmented
    batch_unlabelled: int = 128  # VAT needs a large unlabelled batch to cover the data manifold quickly
    lr: float = 3e-3  # Adam peak learning rate, decayed to 0 by a cosine over `steps`
    weight_decay: float = 0.0  # L2 via AdamW; VAT is already a strong regulariser
    # semi-supervised terms
    vat_weight: float = 1.0  # weight of the VAT (LDS) loss; 0 gives the supervised-only baseline
    eps: float = 1.0  # L2 radius of r_adv in [0, 1] pixel units (a digit has norm ~9); 1 beat 0.3, 2 and 3 here
    xi: float = DEFAULT_XI  # power-iteration finite-difference step; 1e-6 is rounding noise in float32
    n_power: int = 1  # power iterations; 1 is the paper's choice
    entmin_weight: float = 1.0  # entropy minimisation on unlabelled predictions (0 = off): +1.1 points at 2k steps
    balance_weight: float = 0.0  # KL(mean unlabelled prediction || uniform): stops one class swallowing another (0 = off)
    rampup_steps: int = 0  # unsupervised weights ramp up linearly over these steps (0 = full weight from step 1)
    max_shift: int = 2  # random translation of every image by up to this many pixels (0 = no augmentation)
    max_rotate: float = 0.0  # random rotation in degrees; > 0 (or max_scale > 0) switches to bilinear affine augmentation
    max_scale: float = 0.0  # random zoom by up to this fraction (0.1 = 0.9x to 1.1x)
    ema_decay: float = 0.99  # evaluate/save an exponential moving average of the weights (0 = raw weights)
    # bookkeeping
    eval_every: int = 250  # steps between validation/test evaluations (and checkpoint choices)
    out: str = "runs/default"  # folder for best.pth, history.json and config.json
    device: str = "auto"  # "auto" (cuda, then mps, then cpu), or a torch device string such as "cpu", "cuda:0"
    num_threads: int = 0  # CPU threads for torch (0 = torch's default, one per core)
    channels_last: bool = True  # NHWC memory layout: ~1.3x faster convolutions on CPU with oneDNN
    progress: bool = True  # show a tqdm progress bar

    def validate(self) -> None:
        """Raise ValueError naming the field, its value and the allowed range, before any work starts."""
        def need(ok: bool, field: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig.{field}={getattr(self, field)!r} is invalid; allowed: {allowed}")

        need(self.dataset in DATASETS, "dataset", f"one of {list(DATASETS)}")
        need(self.model in MODELS, "model", f"one of {sorted(MODELS)}")
        for field in ("per_class", "steps", "batch_labelled", "batch_unlabelled", "eval_every", "width", "n_power"):
            need(int(getattr(self, field)) == getattr(self, field) and getattr(self, field) >= 1, field, "an integer >= 1")
        for field in ("n_validation", "rampup_steps", "max_shift", "num_threads"):
            need(int(getattr(self, field)) == getattr(self, field) and getattr(self, field) >= 0, field, "an integer >= 0")
        need(self.lr > 0, "lr", "> 0")
        need(self.eps > 0, "eps", "> 0")
        need(self.xi > 0, "xi", "> 0")
        for field in ("vat_weight", "entmin_weight", "balance_weight", "weight_decay"):
            need(getattr(self, field) >= 0 and math.isfinite(getattr(self, field)), field, "a finite number >= 0")
        need(0 <= self.ema_decay < 1, "ema_decay", "0 <= ema_decay < 1")
        need(self.max_shift < 14, "max_shift", "0..13 pixels")
        need(0 <= self.max_rotate <= 180, "max_rotate", "0..180 degrees")
        need(0 <= self.max_scale < 1, "max_scale", "0 <= max_scale < 1")
        resolve_device(self.device)  # raises ValueError for a bad device

    @property
    def uses_unlabelled(self) -> bool:
        """Whether any term trains on the unlabelled images (False: the supervised-only baseline)."""
        return self.vat_weight > 0 or self.entmin_weight > 0 or self.balance_weight > 0

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# Named recipes: overrides on TrainConfig's defaults. "default" is what `python -m vatlib train` runs;
# "best" is the longer recipe best_model.pth is trained with (`python -m vatlib train --preset best`).
PRESETS: Dict[str, Dict[str, Any]] = {
    "default": {},
    "best": dict(steps=9000, eval_every=500, max_rotate=10.0, max_scale=0.1),
}


def preset_config(name: str = "default", **overrides: Any) -> "TrainConfig":
    """TrainConfig of a named preset, with keyword overrides on top."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; allowed: {sorted(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **overrides})


class TrainResult(NamedTuple):
    model: nn.Module  # the final model (EMA weights if ema_decay > 0), eval mode
    history: List[Dict[str, float]]  # one row per evaluation
    best: Dict[str, float]  # step / val_acc / test_acc of the best-on-validation checkpoint
    final: Dict[str, float]  # step / val_acc / test_acc at the last step
    checkpoint: Optional[Path]  # where the best checkpoint was written (None if out is empty)


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu; anything else must name a usable torch device."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not a torch device ({e}); allowed: auto, cpu, cuda[:N], mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(dev.type, False):
        raise ValueError(f"device={device!r} is not available on this machine; allowed: auto, cpu"
                         + "".join(f", {k}" for k, ok in available.items() if ok and k != "cpu"))
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Predicted classes (N,) for uint8 images (N, 28, 28) or float images (N, 1, 28, 28) in [0, 1]."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    preds = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        x = to_float(batch) if batch.dtype == torch.uint8 else batch
        preds.append(model(x).argmax(dim=1).cpu())
    model.train(was_training)
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000) -> float:
    """Accuracy in [0, 1] of ``model`` on uint8 images (N, 28, 28) with labels (N,)."""
    if len(images) == 0:
        return float("nan")
    return (predict(model, images, batch_size) == labels.cpu()).float().mean().item()


class _EMA:
    """Exponential moving average of parameters; buffers (BN statistics) follow the live model."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm-up (1 + t) / (10 + t) so early averages are not dominated by the random init.
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_p, live_p = list(self.model.parameters()), list(model.parameters())
        torch._foreach_lerp_(ema_p, live_p, 1 - decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temporary file + rename), creating the folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


# Fields that may differ between an interrupted run and its resumption without changing the result.
RESUME_FREE_FIELDS = ("out", "progress", "device", "num_threads", "data_root")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``train`` at a step boundary, after it saved the state needed to resume.

    A ``KeyboardInterrupt``, so code that catches that (Jupyter, the command line) still does.
    """

    def __init__(self, message: str, step: int, resume_path: Optional[Path]) -> None:
        super().__init__(message)
        self.step, self.resume_path = step, resume_path


class _StopRequest:
    """SIGINT handler for the length of a run: the first Ctrl-C asks to stop after the current
    step (so no step, save or optimiser update is cut in half); a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        # Signal handlers can only be set from the main thread; elsewhere Ctrl-C keeps its default.
        self._active = threading.current_thread() is threading.main_thread()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and saving the state to resume from "
              "(press Ctrl-C again to abort at once).", file=sys.stderr, flush=True)

    def __enter__(self) -> "_StopRequest":
        # A process started with Ctrl-C ignored (e.g. a background job of a script) keeps ignoring it.
        if self._active and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        else:
            self._active = False
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)


def _read_resume_state(path: Path, cfg: TrainConfig, split_labelled: torch.Tensor) -> Dict[str, Any]:
    """The checked ``resume`` entry of ``path``, or a CheckpointError/ValueError that says what does not match."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state to resume from (it is written at every evaluation); "
                              f"start the run without resume")
    ckpt = load_checkpoint(path)
    state = ckpt.get("resume")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds no training state to resume from (a best/shipped checkpoint?)")
    saved = ckpt["config"]
    changed = [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in cfg.to_dict().items()
               if k not in RESUME_FREE_FIELDS and saved.get(k) != v]
    if changed:
        raise ValueError(f"cannot resume from {path}: the config differs from the interrupted run's "
                         f"({'; '.join(changed)}); resuming needs the same settings")
    if not torch.equal(ckpt["labelled_indices"], split_labelled.cpu()):
        raise ValueError(f"cannot resume from {path}: the labelled images drawn now differ from the saved run's "
                         f"(different data files?)")
    return state


def train(config: Optional[TrainConfig] = None, data: Optional[ImageData] = None, *,
          resume: Union[bool, str, Path] = False) -> TrainResult:
    """Train one model as ``config`` says; see the module docstring.

    Args:
        config: the run's settings (defaults if None).
        data: an ``ImageData`` already in memory (e.g. tiny synthetic data in tests); loaded from
            ``config.dataset`` / ``config.data_root`` when None.
        resume: continue an interrupted run: True reads ``<out>/last.pth``, a path reads that file.
            The config must match the saved one (apart from out, progress, device, threads and data root).

    Raises:
        TrainingInterrupted: Ctrl-C; the state was saved to ``<out>/last.pth`` first.
        FloatingPointError: the loss became NaN or inf (the step and the losses are named).
    """
    cfg = config or TrainConfig()
    cfg.validate()
    device = resolve_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_root)
    split = split_train(data.train_labels, cfg.per_class, cfg.n_validation, cfg.data_seed)
    num_classes = int(data.train_labels.max()) + 1
    out = Path(cfg.out) if cfg.out else None
    last_path = out / "last.pth" if out is not None else None
    resume_state = None
    if resume:
        if resume is True and last_path is None:
            raise ValueError("resume=True needs TrainConfig.out, the folder of the interrupted run (got '')")
        resume_state = _read_resume_state(last_path if resume is True else Path(resume), cfg, split.labelled)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", cfg.to_dict())

    torch.manual_seed(cfg.seed)  # model init and VAT's random directions
    gen = torch.Generator().manual_seed(cfg.seed)  # batch draws and augmentation, on the CPU
    model = build_model(cfg.model, num_classes=num_classes, width=cfg.width).to(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, cfg.steps) / cfg.steps)))
    ema = _EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    eval_model = ema.model if ema is not None else model  # what is evaluated, saved and returned

    train_images = data.train_images.to(device)  # uint8, 47 MB for MNIST: cheap to keep whole
    train_labels = data.train_labels.to(device)
    labelled, unlabelled = split.labelled.to(device), split.unlabelled.to(device)
    val_images, val_labels = data.train_images[split.validation], data.train_labels[split.validation]
    use_unlabelled = cfg.uses_unlabelled and len(unlabelled) > 0

    affine = cfg.max_rotate > 0 or cfg.max_scale > 0

    def batch(indices: torch.Tensor, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """A freshly augmented batch (size, 1, 28, 28) drawn with replacement, and the picked indices."""
        pick = indices[torch.randint(len(indices), (size,), generator=gen).to(device)]
        if affine:
            x = random_affine(train_images[pick], cfg.max_shift, cfg.max_rotate, cfg.max_scale, gen)
        else:  # integer shifts: exact pixels, no interpolation blur
            x = to_float(random_translate(train_images[pick], cfg.max_shift, gen))
        return x.contiguous(memory_format=memory_format), pick

    history: List[Dict[str, float]] = []
    best = {"step": 0, "val_acc": -1.0, "test_acc": float("nan")}
    ckpt_path = out / "best.pth" if out is not None else None
    sums = torch.zeros(4, device=device)  # running sums of sup / vat / ent / balance losses since the last evaluation
    since = 0
    start = 1
    elapsed = 0.0
    if resume_state is not None:
        model.load_state_dict(resume_state["model_state"])
        opt.load_state_dict(resume_state["optimizer"])
        sched.load_state_dict(resume_state["scheduler"])
        if ema is not None:
            ema.model.load_state_dict(resume_state["ema_state"])
        torch.set_rng_state(resume_state["rng_cpu"])
        gen.set_state(resume_state["rng_batches"])
        if device.type == "cuda" and resume_state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(resume_state["rng_cuda"], device)
        history, best = list(resume_state["history"]), dict(resume_state["best"])
        sums.copy_(resume_state["loss_sums"])
        since, start, elapsed = int(resume_state["since"]), int(resume_state["step"]) + 1, float(resume_state["elapsed_s"])

    def save_state(step: int) -> None:
        """Everything the remaining steps depend on, at a step boundary, to ``last.pth`` (atomically)."""
        val_acc = history[-1]["val_acc"] if history else float("nan")
        test_acc = history[-1]["test_acc"] if history else float("nan")
        state = {"step": step, "model_state": cpu_state_dict(model), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "ema_state": cpu_state_dict(ema.model) if ema is not None else None,
                 "rng_cpu": torch.get_rng_state(), "rng_batches": gen.get_state(),
                 "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                 "history": history, "best": best, "loss_sums": sums.cpu().clone(), "since": since,
                 "elapsed_s": time.perf_counter() - t0}
        # Loadable like any checkpoint (load_model gives the evaluated weights); "resume" is the rest.
        save_checkpoint(last_path, eval_model, config=cfg.to_dict(), labelled_indices=split.labelled, step=step,
                        val_acc=val_acc, test_acc=test_acc, validation_indices=split.validation, resume=state)

    t0 = time.perf_counter() - elapsed
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start - 1, desc="vat" if cfg.vat_weight > 0 else "supervised", unit="step")

    model.train()
    with _StopRequest() as stop:
        try:
            for step in range(start, cfg.steps + 1):
                xl, pick_l = batch(labelled, cfg.batch_labelled)
                sup = F.cross_entropy(model(xl), train_labels[pick_l])
                loss = sup
                lds = ent = bal = torch.zeros((), device=device)
                if use_unlabelled:
                    ramp = min(1.0, step / cfg.rampup_steps) if cfg.rampup_steps else 1.0
                    xu, _ = batch(unlabelled, cfg.batch_unlabelled)
                    # Clean unlabelled pass on its own batch, so BN batch statistics match the perturbed
                    # passes inside vat_loss and the KL is truly minimal at r = 0.
                    logits_u = model(xu)
                    if cfg.vat_weight > 0:
                        lds = vat_loss(model, xu, eps=cfg.eps, xi=cfg.xi, n_power=cfg.n_power, logits=logits_u)
                    if cfg.entmin_weight > 0:
                        ent = entropy_loss(logits_u)
                    if cfg.balance_weight > 0:
                        bal = balance_loss(logits_u)
                    loss = loss + ramp * (cfg.vat_weight * lds + cfg.entmin_weight * ent + cfg.balance_weight * bal)
                if not torch.isfinite(loss):
                    kept = [f"{p} (step {s})" for p, s in ((ckpt_path, best["step"]),
                            (last_path, history[-1]["step"] if history else 0)) if p is not None and s]
                    raise FloatingPointError(
                        f"step {step}: loss is {loss.item()} (supervised {sup.item():.4g}, vat {lds.item():.4g}, "
                        f"entropy {ent.item():.4g}, balance {bal.item():.4g}); training stopped before this update. "
                        "Lower lr or eps. "
                        + (f"Last good checkpoints kept: {', '.join(kept)}." if kept else "No checkpoint was written yet."))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update(model, step)
                sums += torch.stack([sup.detach(), lds.detach(), ent.detach(), bal.detach()])
                since += 1
                if bar is not None:
                    bar.update(1)

                evaluating = step % cfg.eval_every == 0 or step == cfg.steps
                if evaluating:
                    val_acc = evaluate(eval_model, val_images, val_labels)
                    test_acc = evaluate(eval_model, data.test_images, data.test_labels)  # reported, never used to choose
                    model.train()
                    losses = (sums / since).tolist()
                    row = {"step": step, "time_s": round(time.perf_counter() - t0, 2), "lr": sched.get_last_lr()[0],
                           "loss_sup": losses[0], "loss_vat": losses[1], "loss_ent": losses[2], "loss_bal": losses[3],
                           "val_acc": val_acc, "test_acc": test_acc}
                    history.append(row)
                    sums.zero_()
                    since = 0
                    # ">=": among equal validation scores keep the later model (lower lr, longer average).
                    # With no validation split (n_validation=0) the final model is the one kept.
                    if val_acc >= best["val_acc"] or (math.isnan(val_acc) and step == cfg.steps):
                        best = {"step": step, "val_acc": val_acc, "test_acc": test_acc}
                        if ckpt_path is not None:
                            save_checkpoint(ckpt_path, eval_model, config=cfg.to_dict(), labelled_indices=split.labelled,
                                            step=step, val_acc=val_acc, test_acc=test_acc,
                                            validation_indices=split.validation, history=history)
                    if out is not None:
                        write_json(out / "history.json", history)
                        save_state(step)
                    if bar is not None:
                        bar.set_postfix(val=f"{val_acc:.4f}", test=f"{test_acc:.4f}", best_val=f"{best['val_acc']:.4f}")
                if stop.requested and step < cfg.steps:
                    if last_path is not None and not evaluating:  # an evaluation step has just saved it
                        save_state(step)
                    where = (f"state saved to {last_path}; continue with resume=True (--resume)"
                             if last_path is not None else "nothing saved (out is empty)")
                    kept = f"; best checkpoint (step {best['step']}) kept at {ckpt_path}" if best["step"] and ckpt_path else ""
                    raise TrainingInterrupted(f"interrupted at step {step} of {cfg.steps}: {where}{kept}", step,
                                              last_path)
        finally:
            if bar is not None:
                bar.close()

    final_model = eval_model.eval()
    last = history[-1]
    final = {"step": last["step"], "val_acc": last["val_acc"], "test_acc": last["test_acc"]}
    return TrainResult(final_model, history, best, final, ckpt_path if best["step"] else None)
