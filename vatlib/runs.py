"""``train()``: one run end to end, with its folder, resuming and Ctrl-C.

``train(TrainConfig(...))`` draws the split, trains, evaluates on validation (and, for reporting
only, on test) every ``eval_every`` steps, keeps the best-on-validation checkpoint and returns the
model, the history and the numbers. Nothing is ever chosen by the test set.

A run's folder (``config.out``) holds ``config.json``, ``history.json``, ``best.pth`` and
``last.pth``, each written atomically. At every evaluation ``last.pth`` receives the full training
state (``Run.state_dict()``), and Ctrl-C stops at the end of the current step after writing it;
``train(config, resume=True)`` (``--resume``) continues from it and, on the CPU, ends with the same
weights and metrics as a run that was never interrupted. A folder that holds a run is never written
over unless asked (``overwrite=True``, ``--overwrite``), and a folder is locked while a run writes
to it: a second run into it is refused at once, naming the run that holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import torch
from torch import nn

from .checkpoint import CheckpointError, SaveError, load_checkpoint, save_checkpoint, write_json
from .config import TrainConfig, recipe_differences
from .data import ImageData, Split, load_dataset, split_train
from .model import model_spec
from .run import ModelArg, Run

__all__ = ["RunExistsError", "RunLockedError", "TrainResult", "TrainingInterrupted", "train"]

RUN_FILES = ("best.pth", "last.pth", "history.json", "config.json")  # what a run writes in its folder
LOCK_FILE = ".lock"  # held while a run writes to its folder


class TrainResult(NamedTuple):
    model: nn.Module  # the final model (the weight average if ema_decay > 0), eval mode
    history: List[Dict[str, float]]  # one row per evaluation
    best: Dict[str, float]  # step / val_acc / test_acc of the best-on-validation checkpoint
    final: Dict[str, float]  # step / val_acc / test_acc at the last step
    checkpoint: Optional[Path]  # where the best checkpoint was written (None if out is empty)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or ``Run.request_stop``) stopped ``train`` at a step boundary, after it saved the state to resume.

    A ``KeyboardInterrupt``, so code that catches that (Jupyter, the command line) still does.
    """

    def __init__(self, message: str, step: int, resume_path: Optional[Path]) -> None:
        super().__init__(message)
        self.step, self.resume_path = step, resume_path


class RunExistsError(FileExistsError):
    """The output folder already holds a run, and neither resume nor overwrite was asked for."""


class RunLockedError(RunExistsError):
    """Another run, alive, is writing to the output folder."""


class FolderLock:
    """An exclusive lock on a run folder for the length of a run: ``<out>/.lock``, held with ``flock``.

    The operating system drops an ``flock`` when its process ends, however it ends, so a lock left by a dead
    process blocks nothing: its file stays, unlocked, and the next run takes it. The file names its holder
    (pid, host, start time, command), which a refused run quotes. On release the file is removed.
    """

    def __init__(self, folder: Path) -> None:
        self.path, self.fd, self.created = folder / LOCK_FILE, None, []

    def __enter__(self) -> "FolderLock":
        folder = self.path.parent
        self.created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.read(fd, 4096).decode(errors="replace").strip()
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunLockedError(f"{self.path.parent} is in use by another run ({self._describe(holder)}); "
                                     f"nothing was changed. Wait for it to end, or choose another --out") from None
            try:  # the file may have been removed by its last holder between our open and our lock: start again
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: the next run creates a fresh file
            os.close(self.fd)  # releases the flock
            self.fd = None
            for folder in self.created:  # a run that failed before writing anything leaves no folder behind
                if any(folder.iterdir()):
                    break
                folder.rmdir()

    @staticmethod
    def _describe(holder: str) -> str:
        try:
            info = json.loads(holder)
            return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
        except (ValueError, KeyError, TypeError):
            return "its process is starting"


class RunFolder:
    """What a run writes: ``best.pth`` when validation improves, ``history.json`` and ``last.pth`` at every
    evaluation. ``out=None``: nothing is written. ``saved`` maps each file to the step of its last good save."""

    def __init__(self, out: Optional[Path]) -> None:
        self.out, self.saved = out, {}

    def save(self, run: Run, name: str, **extra: Any) -> None:
        """``<out>/<name>``: ``run.eval_model`` with the split, the latest accuracies and ``extra`` (atomic)."""
        last = run.history[-1] if run.history else {"val_acc": float("nan"), "test_acc": float("nan")}
        with self._naming_intact_files(run):
            save_checkpoint(self.out / name, run.eval_model, config=run.cfg.to_dict(), step=run.step,
                            labelled_indices=run.split.labelled, validation_indices=run.split.validation,
                            val_acc=last["val_acc"], test_acc=last["test_acc"], data=run.data_info, **extra)
        self.saved[name] = run.step

    def save_state(self, run: Run) -> None:
        """``last.pth``: loadable like any checkpoint (the evaluated weights), plus the training state."""
        self.save(run, "last.pth", resume=run.state_dict())

    def after_evaluation(self, run: Run) -> None:
        """Save what an evaluation produced: ``best.pth`` if it improved, the history, the state."""
        if self.out is None:
            return
        if run.best["step"] == run.step:
            self.save(run, "best.pth", history=run.history)
        with self._naming_intact_files(run):
            write_json(self.out / "history.json", run.history)
        self.save_state(run)

    def kept(self) -> str:
        """Which checkpoints are intact on disk, for error messages."""
        kept = [f"{self.out / name} (step {step})" for name, step in self.saved.items()]
        return f"Last good checkpoints kept: {', '.join(kept)}." if kept else "No checkpoint was written yet."

    @contextlib.contextmanager
    def _naming_intact_files(self, run: Run) -> Iterator[None]:
        """Add to a failed write's SaveError the step training stopped at and the checkpoints still intact."""
        try:
            yield
        except SaveError as e:
            raise SaveError(f"{e}. Training stopped at step {run.step}. {self.kept()}") from None


def _check_out(cfg: TrainConfig, resume: Union[bool, str, Path], overwrite: bool) -> List[Path]:
    """Refuse to start a new run in a folder that holds another one, unless ``overwrite``.

    Returns the earlier run's files, for the caller to delete once every other check has passed.
    """
    out = Path(cfg.out) if cfg.out else None
    if resume:
        if resume is True and out is None:
            raise ValueError("resume=True needs TrainConfig.out, the folder of the interrupted run (got '')")
        return []
    found = [out / name for name in RUN_FILES if out is not None and (out / name).exists()]
    if found and not overwrite:
        raise RunExistsError(
            f"{out} already holds a run ({', '.join(p.name for p in found)}); nothing was changed. Continue it "
            f"with --resume (resume=True), choose another --out, or pass --overwrite (overwrite=True) to replace it")
    return found


def _read_resume_state(path: Path, cfg: TrainConfig, split: Split,
                       data_info: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The checked ``resume`` entry of ``path`` and the model spec it was saved with, or a CheckpointError /
    ValueError that says what does not match."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state to resume from (it is written at every evaluation); "
                              f"start the run without resume")
    ckpt = load_checkpoint(path)
    state = ckpt.get("resume")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds no training state to resume from (a best/shipped checkpoint?)")
    changed = [f"{k}: saved {saved!r}, now {now!r}" for k, (saved, now) in recipe_differences(ckpt["config"], cfg).items()]
    if changed:
        raise ValueError(f"cannot resume from {path}: the config differs from the interrupted run's "
                         f"({'; '.join(changed)}); resuming needs the same settings")
    saved_data = ckpt.get("data", {}).get("sha256")
    if not torch.equal(ckpt["labelled_indices"], split.labelled.cpu()) or saved_data not in (None, data_info["sha256"]):
        raise ValueError(f"cannot resume from {path}: the data differ from the saved run's "
                         f"({ckpt.get('data', {}).get('source')}); resuming needs the same images and labels")
    return state, ckpt["model"]


class _StopRequest:
    """SIGINT handler for the length of a run: the first Ctrl-C asks the run to stop after the current
    step (so no step, save or optimiser update is cut in half); a second one interrupts at once."""

    def __init__(self, run: Run) -> None:
        self.run, self._previous = run, None
        # Signal handlers can only be set from the main thread; elsewhere Ctrl-C keeps its default.
        self._active = threading.current_thread() is threading.main_thread()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.run.stop_requested:
            raise KeyboardInterrupt
        self.run.request_stop()
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


def _interrupted(run: Run, folder: RunFolder) -> TrainingInterrupted:
    """Save the state (unless this step's evaluation just did) and say how to continue."""
    last = folder.out / "last.pth" if folder.out is not None else None
    if last is not None and folder.saved.get("last.pth") != run.step:
        folder.save_state(run)
    where = f"state saved to {last}; continue with resume=True (--resume)" if last else "nothing saved (out is empty)"
    best = (f"; best checkpoint (step {run.best['step']}) kept at {folder.out / 'best.pth'}"
            if "best.pth" in folder.saved else "")
    return TrainingInterrupted(f"interrupted at step {run.step} of {run.cfg.steps}: {where}{best}", run.step, last)


Callback = Callable[[Run], None]


def train(config: Optional[TrainConfig] = None, data: Optional[ImageData] = None, *, model: ModelArg = None,
          resume: Union[bool, str, Path] = False, overwrite: bool = False, on_start: Optional[Callback] = None,
          on_step: Optional[Callback] = None, on_eval: Optional[Callback] = None) -> TrainResult:
    """Train one model as ``config`` says; see the module docstring.

    Args:
        config: the run's settings (defaults if None).
        data: an ``ImageData`` already in memory (your own arrays via ``ImageData.from_arrays``, tiny
            synthetic data in tests); loaded from ``config.dataset`` / ``config.data_root`` when None.
            Either way, every checkpoint records which data was used (``data.fingerprint()``).
        model: a model of your own instead of ``config.model``: any ``nn.Module`` that maps images (N, C, H, W),
            floats in [0, 1], to logits (N, K) for the data's K classes; or a class or function of no arguments
            that builds one. Its initial weights are drawn under ``config.seed`` as vatlib's own are (a module's
            by each submodule's ``reset_parameters()``). Checkpoints hold its weights; reload them with
            ``load_model(path, model=YourModel(...))``. Resuming needs the same model again.
        resume: continue an interrupted run: True reads ``<out>/last.pth``, a path reads that file.
            The recipe must match the saved one (``vatlib.config.recipe``: anything but out, data root, device,
            threads, progress and report_test).
        overwrite: replace a run already in ``config.out`` (its files are deleted first); without it,
            such a folder raises ``RunExistsError`` before anything is written.
        on_start, on_step, on_eval: called with the ``Run`` once before the first step, after every
            step, and after every evaluation (``run.history[-1]`` is the new row, already saved).

    Raises:
        TrainingInterrupted: Ctrl-C or ``run.request_stop()``; the state was saved to ``<out>/last.pth`` first.
        FloatingPointError: the loss became NaN or inf (the step, the losses and the intact checkpoints are named).
        RunExistsError: ``config.out`` holds a run and neither resume nor overwrite was given.
        RunLockedError: another run is writing to ``config.out`` (the message names it).
        SaveError: a file could not be written (disk full, ...); the message names it and the intact checkpoints.
    """
    cfg = config or TrainConfig()
    device = cfg.validate()
    _check_out(cfg, resume, overwrite)  # refuse a folder holding a run at once; checked again under the lock
    out = Path(cfg.out) if cfg.out else None
    with contextlib.ExitStack() as stack:
        if out is not None:  # a second run into this folder is refused from here on
            stack.enter_context(FolderLock(out))
        replaced = _check_out(cfg, resume, overwrite)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        data = data if data is not None else load_dataset(cfg.dataset, cfg.data_root)
        split = split_train(data.train_labels, cfg.per_class, cfg.n_validation, cfg.data_seed)
        data_info = data.fingerprint()  # it hashes the data: once per run
        run = Run(cfg, data, split, device, data_info, model)  # a model that does not fit the data fails here
        if resume:
            path = out / "last.pth" if resume is True else Path(resume)
            state, saved_model = _read_resume_state(path, cfg, split, data_info)
            if saved_model != model_spec(run.model):
                raise ValueError(f"cannot resume from {path}: the interrupted run trained the model {saved_model}, "
                                 f"this one {model_spec(run.model)}; resuming needs the same model")
            try:
                run.load_state_dict(state)
            except (RuntimeError, KeyError) as e:  # a model of the same class, built with other sizes
                raise ValueError(f"cannot resume from {path}: its training state does not fit this model "
                                 f"({' '.join(str(e).split())[:300]}); resuming needs the same model") from None
        for path in replaced:  # overwrite=True, and everything else checked: only now is the earlier run removed
            path.unlink()
        folder = RunFolder(out)
        if out is not None:
            write_json(out / "config.json", cfg.to_dict())
        if resume:
            folder.saved = {"best.pth": run.best["step"], "last.pth": run.step} if run.history else {}
        _train_loop(run, folder, on_start, on_step, on_eval)
    model = run.eval_model.eval()
    if hasattr(model, "check_inputs"):
        model.check_inputs = True
    last = run.history[-1]
    final = {"step": last["step"], "val_acc": last["val_acc"], "test_acc": last["test_acc"]}
    return TrainResult(model, run.history, run.best, final, folder.out / "best.pth" if "best.pth" in folder.saved else None)


def _train_loop(run: Run, folder: RunFolder, on_start: Optional[Callback], on_step: Optional[Callback],
                on_eval: Optional[Callback]) -> None:
    """Steps and evaluations until the run's last step, or until a stop is requested."""
    cfg = run.cfg
    if on_start:
        on_start(run)
    bar = _progress_bar(run)
    run.model.train()
    with _StopRequest(run):
        try:
            while run.step < cfg.steps:
                run.train_step()
                if on_step:
                    on_step(run)
                if run.step % cfg.eval_every == 0 or run.step == cfg.steps:
                    run.evaluate()
                    folder.after_evaluation(run)
                    if on_eval:
                        on_eval(run)
                    if bar is not None:
                        bar.set_postfix(val=f"{run.history[-1]['val_acc']:.4f}", best_val=f"{run.best['val_acc']:.4f}")
                if bar is not None:
                    bar.update(1)
                if run.stop_requested and run.step < cfg.steps:
                    raise _interrupted(run, folder)
        except FloatingPointError as e:
            raise FloatingPointError(f"{e} {folder.kept()}") from None
        finally:
            if bar is not None:
                bar.close()


def _progress_bar(run: Run) -> Any:
    if not run.cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=run.cfg.steps, initial=run.step, desc="vat" if run.terms else "supervised", unit="step")
