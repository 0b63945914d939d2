"""An experiment: a fresh student taught by a trained teacher (Noisy Student, Xie et al. 2020), as a term ``teacher``.

    VATLIB_TEACHER='runs/bench-eps3/MNIST-default(eps=3.0)-draw{draw}/best.pth' \
    python benchmarks/screen.py '{"student": {"eps": 3.0, "pseudo_weight": 0.0, "term_weights": {"teacher": 1.0}}}' \
        --experiment benchmarks/experiments/student.py --draws 3,8
    python benchmarks/experiments/student.py 'runs/.../draw{draw}/best.pth' --draws 3,8   # the teachers' TTA on validation

The teacher is the checkpoint of the same labelled draw (``{draw}`` in the path is the run's data_seed). At the
student's first step it labels every unlabelled image once, with its prediction averaged over the image and its
eight one-pixel shifts (test-time augmentation); an image whose averaged confidence reaches ``THRESHOLD`` keeps
its label. The term is the default's pseudo-label term with those fixed labels in place of the student's own:
the cross-entropy of a strong view against the teacher's label. The student starts from scratch, with VAT and the
stroke as in the default, so it sees all 59,000 images labelled from its first step and the noise of its own
views, where the default's pseudo-labels start from nothing. Run it with ``pseudo_weight=0``.
"""

from __future__ import annotations

import argparse
import os
from typing import Tuple

import torch
import torch.nn.functional as F

import vatlib

THRESHOLD = 0.9
SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # the image and its eight one-pixel shifts


@torch.no_grad()
def tta_probabilities(model: torch.nn.Module, images: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Softmax (N, C) averaged over SHIFTS of uint8 images (N, 28, 28), the model in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch):
        x = vatlib.to_float(images[i:i + batch]).to(device)
        out.append(torch.stack([model(torch.roll(x, s, dims=(2, 3))).float().softmax(1) for s in SHIFTS]).mean(0))
    model.train(was_training)
    return torch.cat(out)


def _teacher_labels(run) -> Tuple[torch.Tensor, torch.Tensor]:
    """(labels, kept) over run.unlabelled, computed once per run and kept on it (a screen's next run, of another
    draw, needs its own teacher)."""
    if not hasattr(run, "teacher_labels"):
        pattern = os.environ.get("VATLIB_TEACHER")
        if not pattern:
            raise ValueError("the teacher term needs VATLIB_TEACHER, a checkpoint path with {draw} in it")
        path = pattern.format(draw=run.cfg.data_seed)
        ckpt = vatlib.load_checkpoint(path)
        if ckpt["config"]["data_seed"] != run.cfg.data_seed:
            raise ValueError(f"{path}: a teacher of draw {ckpt['config']['data_seed']}, not {run.cfg.data_seed}")
        teacher = vatlib.model_from_checkpoint(ckpt, path).to(run.device)
        conf, label = tta_probabilities(teacher, run.train_images[run.unlabelled]).max(1)
        run.teacher_labels = (label.to(run.device), (conf >= THRESHOLD).float().to(run.device))
    return run.teacher_labels


def teacher_term(run, u) -> torch.Tensor:
    label, kept = _teacher_labels(run)
    strong, _ = run.views(run.unlabelled[u.pos], strong=True)
    return (F.cross_entropy(run.model(strong), label[u.pos], reduction="none") * kept[u.pos]).mean()


vatlib.register_term("teacher", teacher_term, clean_grad=False)


def main() -> None:
    parser = argparse.ArgumentParser(description="Validation accuracy of each draw's teacher, plain and with TTA.")
    parser.add_argument("pattern", help="checkpoint path with {draw}")
    parser.add_argument("--draws", default="3,8")
    parser.add_argument("--data-root", default="data")
    args = parser.parse_args()
    data = vatlib.load_dataset("MNIST", args.data_root)
    for draw in vatlib.parse_draws(args.draws):
        path = args.pattern.format(draw=draw)
        ckpt = vatlib.load_checkpoint(path)
        model = vatlib.model_from_checkpoint(ckpt, path)
        split = vatlib.split_train(data.train_labels, per_class=10, n_validation=1000, seed=draw)
        x, y = data.train_images[split.validation], data.train_labels[split.validation]
        tta = tta_probabilities(model, x).argmax(1)
        print(f"draw {draw}: validation {vatlib.evaluate(model, x, y):.2%}, with TTA {(tta == y).float().mean():.2%}")


if __name__ == "__main__":
    main()
