"""An experiment: label propagation in feature space (Iscen et al., CVPR 2019), as a loss term ``lp``.

    python benchmarks/screen.py '{"lp1": {"term_weights": {"lp": 1.0}}}' \
        --experiment benchmarks/experiments/label_propagation.py --draws 3,8
    python benchmarks/experiments/label_propagation.py runs/x/best.pth   # a trained model: does propagation help?

Every ``EVERY`` steps (from ``START`` on) the model embeds every training image but the validation
ones; a k-nearest-neighbour graph over those features (cosine similarity to the power ``GAMMA``,
symmetrised) diffuses the 100 labels: Z solves (I - alpha W_norm) Z = Y by conjugate gradients.
Each unlabelled image gets the class argmax Z with a certainty weight 1 - H(z)/log C, and each class
a weight inversely proportional to its number of pseudo-labels (so a class the labelled draw
under-represents is not swallowed). The term is the weighted cross-entropy of the clean prediction
against those labels: the labels come from the data's neighbourhoods as a whole, not from the model's
own confidence image by image.

The diagnostic mode (a file argument) compares, on the validation images only, the model's
predictions with the propagated labels of the same model's features.
"""

from __future__ import annotations

import argparse
import math
import warnings
from typing import Optional

import torch
import torch.nn.functional as F

import vatlib

K, GAMMA, ALPHA = 50, 3.0, 0.99  # Iscen et al.'s kNN size, similarity power and diffusion weight
START, EVERY = 500, 500  # first propagation and steps between propagations
CHUNK = 4096  # rows of the similarity matrix computed at a time


@torch.no_grad()
def embed_all(model: torch.nn.Module, images: torch.Tensor, batch: int = 2048) -> torch.Tensor:
    """L2-normalised penultimate features (N, D) of uint8 images (N, 28, 28), the model in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats = [F.normalize(model.embed(vatlib.to_float(images[i:i + batch]).to(device)).float(), dim=1)
             for i in range(0, len(images), batch)]
    model.train(was_training)
    return torch.cat(feats)


@torch.no_grad()
def knn_graph(feats: torch.Tensor, k: int = K, gamma: float = GAMMA) -> torch.Tensor:
    """The symmetric normalised affinity D^-1/2 (A + A^T) D^-1/2 (sparse, N x N) of the k-NN graph of ``feats``."""
    n = len(feats)
    rows, cols, vals = [], [], []
    for i in range(0, n, CHUNK):
        sim = feats[i:i + CHUNK] @ feats.T  # (chunk, N)
        sim[torch.arange(len(sim)), torch.arange(i, i + len(sim))] = -1.0  # no self-loops
        s, j = sim.topk(k, dim=1)
        rows.append(torch.arange(i, i + len(sim)).repeat_interleave(k))
        cols.append(j.flatten())
        vals.append(s.clamp_min(0).pow(gamma).flatten())
    idx = torch.stack([torch.cat(rows + cols), torch.cat(cols + rows)])
    with warnings.catch_warnings():  # torch's notes on sparse tensors being in beta: the products used here are not
        warnings.simplefilter("ignore", UserWarning)
        a = torch.sparse_coo_tensor(idx, torch.cat(vals + vals), (n, n)).coalesce()  # A + A^T
        deg = torch.sparse.sum(a, dim=1).to_dense().clamp_min(1e-12)
        r = deg.rsqrt()
        i, v = a.indices(), a.values()
        return torch.sparse_coo_tensor(i, v * r[i[0]] * r[i[1]], (n, n)).coalesce().to_sparse_csr()


@torch.no_grad()
def propagate(w: torch.Tensor, y: torch.Tensor, alpha: float = ALPHA, iters: int = 20) -> torch.Tensor:
    """Z (N, C) solving (I - alpha W) Z = Y by conjugate gradients, every column at once."""
    z = torch.zeros_like(y)
    r = y.clone()
    p = r.clone()
    rs = (r * r).sum(0)
    for _ in range(iters):
        ap = p - alpha * (w @ p)
        step = rs / (p * ap).sum(0).clamp_min(1e-30)
        z += step * p
        r -= step * ap
        rs_new = (r * r).sum(0)
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    return z


@torch.no_grad()
def pseudo_labels(feats: torch.Tensor, labelled_pos: torch.Tensor, labelled_y: torch.Tensor, num_classes: int,
                  k: int = K):
    """(labels, certainty weights, class weights) for every row of ``feats`` from the labels at ``labelled_pos``.

    Example: two groups of three points, one labelled in each; the labels follow the groups.
        >>> feats = F.normalize(torch.tensor([[1, .1], [1, 0], [1, -.1], [.1, 1], [0, 1], [-.1, 1]]), dim=1)
        >>> label, certainty, class_w = pseudo_labels(feats, torch.tensor([0, 5]), torch.tensor([0, 1]), 2, k=2)
        >>> label.tolist(), bool((certainty > 0.5).all()), class_w.tolist()
        ([0, 0, 0, 1, 1, 1], True, [1.0, 1.0])
    """
    y = torch.zeros(len(feats), num_classes)
    y[labelled_pos, labelled_y] = 1.0
    y /= y.sum(0).clamp_min(1.0)  # each class carries the same mass whatever its count (Iscen et al.)
    z = propagate(knn_graph(feats, k=min(k, len(feats) - 1)), y).clamp_min(0)
    p = z / z.sum(1, keepdim=True).clamp_min(1e-12)
    certainty = 1 - (-(p * p.clamp_min(1e-12).log()).sum(1)) / math.log(num_classes)
    label = z.argmax(1)
    counts = torch.bincount(label, minlength=num_classes).float().clamp_min(1.0)
    class_w = (1.0 / counts) * len(label) / num_classes  # mean 1 over a balanced set
    return label, certainty, class_w


class Propagation:
    """The run's propagated labels over its labelled + unlabelled images, refreshed every EVERY steps."""

    def __init__(self) -> None:
        self.step = -1
        self.label: Optional[torch.Tensor] = None

    def refresh(self, run) -> None:
        order = torch.cat([run.labelled, run.unlabelled])  # indices into the training images
        feats = embed_all(run.model, run.train_images[order]).cpu()
        n_l = len(run.labelled)
        label, certainty, class_w = pseudo_labels(feats, torch.arange(n_l), run.train_labels[run.labelled].cpu(),
                                                  run.num_classes)
        dev = run.unlabelled.device
        self.label, self.weight = label[n_l:].to(dev), (certainty * class_w[label])[n_l:].to(dev)
        self.step = run.step


def lp_term(run, u) -> torch.Tensor:
    if not hasattr(run, "propagation"):  # on the run: a screen's next run starts afresh
        run.propagation = Propagation()
    state = run.propagation
    if run.step >= START and (state.label is None or run.step - state.step >= EVERY):
        state.refresh(run)
    if state.label is None:
        return u.logits.sum() * 0.0
    ce = F.cross_entropy(u.logits.float(), state.label[u.pos], reduction="none")
    return (ce * state.weight[u.pos]).mean()


vatlib.register_term("lp", lp_term, clean_grad=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Validation accuracy of a checkpoint's predictions and of label "
                                                 "propagation over its features (same labelled draw).")
    parser.add_argument("checkpoint")
    parser.add_argument("--data-root", default="data")
    args = parser.parse_args()
    ckpt = vatlib.load_checkpoint(args.checkpoint)
    cfg = ckpt["config"]
    model = vatlib.model_from_checkpoint(ckpt, args.checkpoint)
    data = vatlib.load_dataset(cfg.get("dataset", "MNIST"), args.data_root)
    split = vatlib.split_train(data.train_labels, per_class=cfg["per_class"], n_validation=cfg["n_validation"],
                               seed=cfg["data_seed"])
    # The validation images join the graph unlabelled, so their propagated labels can be scored; nothing is chosen here.
    order = torch.cat([split.labelled, split.unlabelled, split.validation])
    feats = embed_all(model, data.train_images[order])
    n_l, n_v = len(split.labelled), len(split.validation)
    num_classes = int(data.train_labels.max()) + 1
    label, certainty, _ = pseudo_labels(feats, torch.arange(n_l), data.train_labels[split.labelled], num_classes)
    val_y = data.train_labels[split.validation]
    model_pred = vatlib.predict(model, data.train_images[split.validation])
    print(f"{args.checkpoint}: draw {cfg['data_seed']}; validation accuracy: model {(model_pred == val_y).float().mean():.2%}, "
          f"label propagation {(label[-n_v:] == val_y).float().mean():.2%}; "
          f"they disagree on {(label[-n_v:] != model_pred).sum()} images")


if __name__ == "__main__":
    main()
