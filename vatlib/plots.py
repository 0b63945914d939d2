"""Figures for notebooks: labelled grids, VAT perturbations, training curves, errors, embeddings.

Every function draws on a new (or given) matplotlib figure and returns it, so notebooks stay one
line per figure and scripts can ``fig.savefig(...)``. matplotlib is imported lazily: the rest of
vatlib does not need it.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import torch

__all__ = [
    "plot_confusion",
    "plot_embedding",
    "plot_history",
    "plot_labelled_grid",
    "plot_misclassified",
    "plot_perturbations",
]


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _np(t):
    """Tensor -> numpy for matplotlib (which would otherwise warn about tensors' __array__)."""
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t


def plot_labelled_grid(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, per_class: int = 10):
    """The labelled images as a grid: one row per class, ``per_class`` columns. images uint8 (N, 28, 28)."""
    plt = _plt()
    classes = sorted(torch.unique(labels[indices]).tolist())
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 0.8, len(classes) * 0.8), squeeze=False)
    for row, c in enumerate(classes):
        members = indices[labels[indices] == c][:per_class]
        for col in range(per_class):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(members):
                ax.imshow(_np(images[members[col]]), cmap="gray", vmin=0, vmax=255)
        axes[row, 0].text(-8, 14, str(c), fontsize=12, ha="right", va="center")
    fig.suptitle(f"The {len(indices)} labelled images, by class")
    return fig


def plot_perturbations(clean: torch.Tensor, r_adv: torch.Tensor, pred_clean: Sequence[int], pred_adv: Sequence[int],
                       true: Optional[Sequence[int]] = None):
    """Rows: clean image, r_adv as a heat map (red +, blue -), perturbed image; predictions in the titles.

    clean and r_adv are float (N, 1, 28, 28); the perturbed image is shown clipped to [0, 1].
    """
    plt = _plt()
    n = clean.shape[0]
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.2), squeeze=False)
    bound = float(r_adv.abs().max())
    for i in range(n):
        img, r = clean[i, 0].cpu(), r_adv[i, 0].cpu()
        axes[0, i].imshow(_np(img), cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(f"pred {pred_clean[i]}" + (f" (true {true[i]})" if true is not None else ""), fontsize=8)
        heat = axes[1, i].imshow(_np(r), cmap="seismic", vmin=-bound, vmax=bound)
        axes[1, i].set_title(f"‖r‖={float(r.norm()):.2f}", fontsize=8)
        axes[2, i].imshow(_np((img + r).clamp(0, 1)), cmap="gray", vmin=0, vmax=1)
        axes[2, i].set_title(f"pred {pred_adv[i]}", fontsize=8, color="red" if pred_adv[i] != pred_clean[i] else "black")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for row, name in enumerate(["clean x", "r_adv", "x + r_adv"]):
        axes[row, 0].set_ylabel(name)
    fig.colorbar(heat, ax=axes[1, :].tolist(), shrink=0.8, label="r_adv")
    return fig


def plot_views(rows: Mapping[str, torch.Tensor]):
    """One row of images per entry, name -> float images (N, 1, 28, 28) in [0, 1]: views of the same images.

    For instance the labelled images and the same with ``random_stroke``, or unlabelled images and
    their strong views. Every row must hold the same number of images.
    """
    plt = _plt()
    n = {len(v) for v in rows.values()}
    if len(n) != 1:
        raise ValueError(f"every row needs the same number of images, got {[len(v) for v in rows.values()]}")
    n = n.pop()
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n, 1.2 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for i in range(n):
            axes[r, i].imshow(_np(images[i, 0].cpu()), cmap="gray", vmin=0, vmax=1)
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center")
    return fig


def plot_history(histories: Mapping[str, List[Dict[str, float]]], ax=None):
    """Validation (solid) and test (dashed) accuracy against step, one colour per run."""
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    for i, (name, history) in enumerate(histories.items()):
        steps = [h["step"] for h in history]
        color = f"C{i}"
        ax.plot(steps, [100 * h["val_acc"] for h in history], color=color, label=f"{name} (validation)")
        ax.plot(steps, [100 * h["test_acc"] for h in history], color=color, ls="--", label=f"{name} (test)")
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_confusion(true: torch.Tensor, pred: torch.Tensor, ax=None, title: str = "Confusion matrix (test set)"):
    """Confusion matrix from scikit-learn, counts in each cell."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 5))
    else:
        fig = ax.figure
    ConfusionMatrixDisplay.from_predictions(true.numpy(), pred.numpy(), ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(title)
    return fig


def plot_misclassified(images: torch.Tensor, true: torch.Tensor, pred: torch.Tensor, max_images: int = 40,
                       columns: int = 10):
    """The first ``max_images`` misclassified images (uint8 (N, 28, 28)) titled 'true→pred'."""
    plt = _plt()
    wrong = torch.nonzero(true != pred).flatten()
    shown = wrong[:max_images]
    rows = max(1, -(-len(shown) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 1.05), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown.tolist()):
        ax.imshow(_np(images[i]), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{int(true[i])}→{int(pred[i])}", fontsize=8, color="red")
    fig.suptitle(f"{len(wrong)} misclassified test images (first {len(shown)} shown, true→predicted)")
    return fig


def plot_embedding(points: torch.Tensor, labels: torch.Tensor, highlight: Optional[torch.Tensor] = None, ax=None,
                   title: str = ""):
    """2-D points (N, 2) coloured by class; ``highlight`` (indices) drawn as large black-edged markers."""
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 6))
    else:
        fig = ax.figure
    points, labels = _np(points), _np(labels)
    highlight = _np(highlight)
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=3, alpha=0.6, vmin=-0.5, vmax=9.5)
    if highlight is not None and len(highlight):
        ax.scatter(points[highlight, 0], points[highlight, 1], c=labels[highlight], cmap="tab10", s=60,
                   edgecolors="black", linewidths=1.2, vmin=-0.5, vmax=9.5, label="labelled")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    fig.colorbar(scatter, ax=ax, ticks=range(10), shrink=0.7)
    return fig
