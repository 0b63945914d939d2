"""The notebook runs top to bottom with small parameters (papermill), as a user would run it."""

import nbformat
import pytest
import torch

from helpers import REPO, write_idx_dataset
from vatlib import ConvNet, save_checkpoint

NOTEBOOK = REPO / "Projet_deep_learning.ipynb"


def test_notebook_has_one_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "STEPS" in tagged[0].source


def _execute(tmp_path, **parameters):
    papermill = pytest.importorskip("papermill")
    # Sections 3 and 7 load a model; any MNIST checkpoint of the right kind will do for a smoke run.
    model_path = tmp_path / "model.pth"
    save_checkpoint(model_path, ConvNet(width=16), config={"seed": 0, "data_seed": 0, "dataset": "MNIST"},
                    labelled_indices=torch.arange(100), step=0, val_acc=0.0, test_acc=0.0)
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), cwd=str(REPO), kernel_name="python3", progress_bar=False,
        parameters=dict(STEPS=20, EVAL_EVERY=10, TSNE_POINTS=150, OUT_DIR=str(tmp_path / "runs"),
                        BEST_MODEL=str(model_path), **parameters),
    )
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    return sum(1 for c in executed.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))


# Takes ~40 s: three 20-step trainings and t-SNE on 250 points.
@pytest.mark.slow
def test_notebook_executes_with_small_parameters(tmp_path):
    images = _execute(tmp_path, DATA_ROOT=str(REPO / "data"))
    assert images == 8  # labelled grid, 2 perturbation figures, the recipe's views, curves, confusions, errors, embeddings


@pytest.mark.slow
def test_notebook_runs_on_another_dataset(tmp_path):
    """DATASET="FashionMNIST" end to end, on tiny synthetic files the test writes (the real ones are not shipped)."""
    root = write_idx_dataset(tmp_path / "data", name="FashionMNIST", n_train=600, n_test=200)
    images = _execute(tmp_path, DATASET="FashionMNIST", DATA_ROOT=str(root), VERIFY_DATA=False, N_VALIDATION=100,
                      PER_CLASS=5, RUN_VAT_ONLY=False)
    assert images == 6  # no perturbation figures: the shipped model is an MNIST model
