"""The experiments under benchmarks/experiments/ plug into vatlib through its extension points only."""

import importlib.util

import pytest
import torch

import vatlib
from helpers import REPO, tiny_config


def _import(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def paper():
    from vatlib.model import EXTRA_MODELS
    from vatlib.schedules import SCHEDULES
    module = _import("paper")
    yield module
    SCHEDULES.pop("hold80-linear", None)
    for name in [n for n in EXTRA_MODELS if n.startswith("mlp-")]:
        EXTRA_MODELS.pop(name)


def test_the_paper_experiments_schedule_holds_then_decays_with_beta1_half(paper):
    schedule = vatlib.SCHEDULES["hold80-linear"]
    assert [schedule.lr(t, 60_000) for t in (0, 48_000, 54_000, 60_000)] == [1.0, 1.0, 0.5, 0.0]
    assert [schedule.beta1(t, 60_000) for t in (47_999, 48_000)] == [0.9, 0.5]


def test_shared_noise_is_one_draw_for_the_unlabelled_passes_of_a_step(paper):
    noise = paper.SharedNoise(0.5).train()
    x_l, x_u = torch.zeros(100, 4), torch.zeros(250, 4)
    noise(x_l)
    clean, power, perturbed = noise(x_u), noise(x_u), noise(x_u)
    assert torch.equal(clean, power) and torch.equal(clean, perturbed)
    noise(x_l)  # the next step
    assert not torch.equal(noise(x_u), clean)
    assert not torch.equal(noise(x_l), noise(x_l))  # the labelled pass: a fresh draw each time


def test_only_labelled_batches_move_the_running_statistics(paper):
    bn = paper.LabelledStatsBatchNorm(4).train()
    bn(torch.randn(250, 4) + 5)
    assert torch.equal(bn.running_mean, torch.zeros(4))
    out = bn(torch.randn(100, 4) + 5)
    assert (bn.running_mean > 0.3).all() and abs(float(out.mean())) < 1e-5


@pytest.mark.parametrize("model", ["mlp-shared-noise", "mlp-bn-labelled", "mlp-authors-init", "mlp-input-noise",
                                   "mlp-leaky"])
def test_each_paper_model_trains_under_the_papers_batches(tmp_path, tiny_data, paper, model):
    cfg = tiny_config(tmp_path, model=model, per_class=10, n_validation=60, batch_labelled=100, batch_unlabelled=250,
                      steps=10, eval_every=10, max_shift=0, ema_decay=0.0, lr_schedule="hold80-linear", eps=5.0,
                      out="")
    result = vatlib.train(cfg, data=tiny_data)
    assert result.history[-1]["loss_vat"] > 0 and result.history[-1]["lr"] == 0.0
    if model == "mlp-authors-init":
        from vatlib.model import EXTRA_MODELS
        first = EXTRA_MODELS[model](10, (1, 28, 28)).layers[1]
        assert first.bias is not None and 0.95 < float(first.weight.detach().std()) * 28 < 1.05  # N(0, 1/784), as built


@pytest.mark.parametrize("model", ["m5-half", "m5-quarter", "cnn5x5", "resnet"])
def test_each_candidate_architecture_maps_images_to_logits_and_trains(tmp_path, tiny_data, model):
    from vatlib.model import EXTRA_MODELS
    _import("architectures")
    try:
        net = EXTRA_MODELS[model](10, (1, 28, 28)).eval()
        assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)
        result = vatlib.train(tiny_config(tmp_path, model=model, steps=4, eval_every=4, out=""), data=tiny_data)
        assert result.history[-1]["loss_vat"] > 0
    finally:
        for name in ("m5-half", "m5-quarter", "cnn5x5", "resnet"):
            EXTRA_MODELS.pop(name, None)
