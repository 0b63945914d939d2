"""Shared fixtures: tiny synthetic data (see helpers.py) and the shipped MNIST."""

import pytest
import torch

from helpers import REPO, write_idx_dataset


@pytest.fixture
def tiny_root(tmp_path):
    return write_idx_dataset(tmp_path)


@pytest.fixture
def tiny_data(tiny_root):
    from vatlib import load_dataset

    return load_dataset("KMNIST", tiny_root, verify=False, download=False)


@pytest.fixture(scope="session")
def mnist():
    from vatlib import load_dataset

    return load_dataset("MNIST", REPO / "data", download=False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
