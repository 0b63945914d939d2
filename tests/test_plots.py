"""Plot helpers draw without error on tiny inputs (Agg backend) and show what they claim."""

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from vatlib import plots  # noqa: E402


def test_every_plot_helper_draws(tiny_data):
    imgs, labels = tiny_data.train_images, tiny_data.train_labels
    idx = torch.cat([torch.nonzero(labels == c).flatten()[:3] for c in range(10)])
    fig = plots.plot_labelled_grid(imgs, labels, idx, per_class=3)
    assert len(fig.axes) == 30
    x = imgs[:4].unsqueeze(1).float() / 255
    r = torch.randn_like(x) * 0.1
    fig = plots.plot_perturbations(x, r, [1, 2, 3, 4], [1, 2, 0, 4], true=[1, 2, 3, 4])
    assert fig.axes[10].get_title() == "pred 0"  # axes are row-major: bottom row, third column
    fig = plots.plot_views({"images": x, "perturbed": (x + r).clamp(0, 1)})
    assert len(fig.axes) == 8 and fig.axes[4].get_ylabel() == "perturbed"
    import pytest
    with pytest.raises(ValueError, match=r"same number of images, got \[4, 3\]"):
        plots.plot_views({"a": x, "b": x[:3]})
    hist = [{"step": s, "val_acc": 0.5, "test_acc": 0.4} for s in (10, 20)]
    fig = plots.plot_history({"a": hist, "b": hist})
    assert len(fig.axes[0].lines) == 4
    fig = plots.plot_confusion(labels[:50], labels[:50].roll(1))
    assert fig.axes[0].get_title().startswith("Confusion")
    pred = labels.clone()
    pred[:7] = (pred[:7] + 1) % 10
    fig = plots.plot_misclassified(imgs, labels, pred, max_images=5, columns=5)
    assert "7 misclassified" in fig._suptitle.get_text()
    fig = plots.plot_embedding(torch.randn(100, 2), labels[:100], highlight=torch.arange(5), title="t")
    assert fig.axes[0].get_title() == "t"
    matplotlib.pyplot.close("all")
