"""VAT checked against independent references: exact float64 Hessians, constant models, BN buffers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vatlib import ConvNet, VATLoss, entropy_loss, l2_normalize, vat_loss, vat_perturbation
from vatlib.vat import DEFAULT_XI


def kl_hessian(model: nn.Module, x0: torch.Tensor) -> torch.Tensor:
    """Exact Hessian of r -> KL(p(x0) || p(x0 + r)) at r = 0 for one sample x0 (D,), float64."""
    p = F.softmax(model(x0[None]), dim=1).detach()

    def kl(r):
        return (p * (p.log() - F.log_softmax(model((x0 + r)[None]), dim=1))).sum()

    return torch.autograd.functional.hessian(kl, torch.zeros_like(x0))


class TinyNet(nn.Module):
    def __init__(self, d_in=6, hidden=5, classes=4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.net(x)


class ConstantNet(nn.Module):
    """Ignores its input: any perturbation leaves the prediction unchanged."""

    def __init__(self, classes=3):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.3, -1.0, 2.0][:classes]))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1) + 0.0 * x.flatten(1).sum(1, keepdim=True)


def test_direction_is_top_eigenvector_of_exact_kl_hessian():
    torch.manual_seed(0)
    model = TinyNet().double()
    x = torch.randn(5, 6, dtype=torch.float64)
    r = vat_perturbation(model, x, eps=1.0, xi=1e-4, n_power=50)
    for i in range(len(x)):
        evals, evecs = torch.linalg.eigh(kl_hessian(model, x[i]))
        assert evals[-1] > 1.5 * evals[-2], "test needs an eigen-gap for the power iteration to converge"
        cos = torch.dot(r[i], evecs[:, -1]).abs() / r[i].norm()
        assert cos > 1 - 1e-6, f"sample {i}: |cos(r_adv, top eigenvector)| = {cos}"


def test_one_power_iteration_is_exact_for_rank_one_hessian():
    # Binary logistic model: logits (w.x + b, 0), so the KL Hessian is c * w w^T and one power
    # iteration from any direction not orthogonal to w must give +-w exactly.
    torch.manual_seed(1)
    w = torch.randn(7, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(7, 1).double())
    with torch.no_grad():
        model[0].weight.copy_(w[None])

    def two_class(x):
        z = model(x)
        return torch.cat([z, torch.zeros_like(z)], dim=1)

    class Wrap(nn.Module):
        def forward(self, x):
            return two_class(x)

    x = torch.randn(4, 7, dtype=torch.float64)
    r = vat_perturbation(Wrap(), x, eps=0.5, xi=1e-5, n_power=1)
    cos = (r @ w).abs() / (r.norm(dim=1) * w.norm())
    assert torch.allclose(cos, torch.ones(4, dtype=torch.float64), atol=1e-8), cos


@pytest.mark.parametrize("shape", [(8, 1, 28, 28), (3, 10), (2, 3, 4, 5, 6)])
@pytest.mark.parametrize("eps", [0.1, 2.5])
def test_perturbation_has_norm_eps_per_sample_and_input_shape(shape, eps):
    torch.manual_seed(0)
    d_in = int(torch.tensor(shape[1:]).prod())
    model = nn.Sequential(nn.Flatten(), nn.Linear(d_in, 16), nn.ReLU(), nn.Linear(16, 5))
    x = torch.rand(shape)
    r = vat_perturbation(model, x, eps=eps)
    assert r.shape == x.shape
    norms = r.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, eps), rtol=1e-5), norms


def test_constant_model_gives_zero_loss_and_finite_perturbation():
    model = ConstantNet()
    x = torch.rand(6, 1, 28, 28)
    r = vat_perturbation(model, x, eps=2.0)
    assert torch.isfinite(r).all()
    # Zero gradient: each sample keeps its random start direction, so the norm is still eps.
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((6,), 2.0), rtol=1e-5)
    loss = vat_loss(model, x, eps=2.0)
    assert loss.item() == 0.0


@pytest.mark.parametrize("scale", [0.0, 1e-30, 1e30])
def test_l2_normalize_never_nan(scale):
    d = torch.randn(4, 3, 5) * scale
    d[1] = 0.0  # an all-zero sample
    out = l2_normalize(d)
    assert torch.isfinite(out).all()
    norms = out.flatten(1).norm(dim=1)
    assert norms[1] == 0
    expected = 0.0 if scale == 0 else 1.0
    assert torch.allclose(norms[[0, 2, 3]], torch.full((3,), expected), atol=1e-6)


def _bn_model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
        nn.Flatten(), nn.Linear(4 * 26 * 26, 8), nn.BatchNorm1d(8, momentum=None), nn.ReLU(),
        nn.Linear(8, 3),
    )


@pytest.mark.parametrize("pass_logits", [False, True])
def test_buffers_unchanged_by_perturbation_passes(pass_logits):
    torch.manual_seed(0)
    model = _bn_model().train()
    x = torch.rand(5, 1, 28, 28)
    model(torch.rand(5, 1, 28, 28))  # give the running stats non-trivial values
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    assert len(before) == 9  # mean, var, counter for each of the three norm layers
    logits = model(x).detach() if pass_logits else None
    before = {k: v.clone() for k, v in model.state_dict().items() if k in before}
    loss = vat_loss(model, x, eps=1.0, n_power=2, logits=logits)
    loss.backward()  # the graph is still usable after the buffers were restored
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"buffer {k} changed"


def test_power_iteration_computes_no_parameter_gradient():
    torch.manual_seed(0)
    model = ConvNet(width=4).train()
    sentinel = {n: torch.full_like(p, 7.0) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = sentinel[n].clone()
    calls = []
    hooks = [p.register_hook(lambda g, n=n: calls.append(n)) for n, p in model.named_parameters()]
    vat_perturbation(model, torch.rand(4, 1, 28, 28), eps=2.0, n_power=3)
    for h in hooks:
        h.remove()
    assert calls == [], f"parameter gradients were computed for {sorted(set(calls))}"
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, sentinel[n]), f".grad of {n} was modified"


def test_loss_gradient_flows_through_perturbed_pass_only():
    torch.manual_seed(0)
    model = TinyNet()
    x = torch.randn(8, 6)
    logits = model(x)  # attached to the graph on purpose: vat_loss must detach it
    logits.retain_grad()
    loss = vat_loss(model, x, eps=1.0, logits=logits)
    loss.backward()
    assert logits.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # VATLoss module agrees with the function under the same RNG state.
    torch.manual_seed(3)
    a = vat_loss(model, x, eps=1.0)
    torch.manual_seed(3)
    b = VATLoss(eps=1.0)(model, x)
    assert torch.equal(a, b)


def test_loss_equals_kl_at_returned_perturbation():
    torch.manual_seed(0)
    model = TinyNet().double()
    x = torch.randn(6, 6, dtype=torch.float64)
    torch.manual_seed(5)
    r = vat_perturbation(model, x, eps=0.7)
    torch.manual_seed(5)
    loss = vat_loss(model, x, eps=0.7)
    p = F.softmax(model(x), 1)
    expected = (p * (p.log() - F.log_softmax(model(x + r), 1))).sum(1).mean()
    assert torch.allclose(loss, expected, rtol=1e-10)
    # And the adversarial direction is worse than random directions of the same norm.
    rand = torch.randn_like(x)
    rand = 0.7 * rand / rand.norm(dim=1, keepdim=True)
    kl_rand = (p * (p.log() - F.log_softmax(model(x + rand), 1))).sum(1).mean()
    assert loss > kl_rand


def test_default_xi_float32_matches_float64():
    # The paper's xi=1e-6 is rounding noise in float32; DEFAULT_XI must give the float64 direction.
    # float32 and float64 draw different random starts, so compare converged directions (many
    # power iterations -> the top eigenvector, up to sign) rather than single steps.
    torch.manual_seed(0)
    model = ConvNet(width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20):  # a little training so predictions are not uniform
        x = torch.rand(32, 1, 28, 28)
        F.cross_entropy(model(x), torch.randint(0, 10, (32,))).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    x = torch.rand(16, 1, 28, 28)
    model64 = ConvNet(width=8).double().eval()
    model64.load_state_dict(model.state_dict())
    r64 = vat_perturbation(model64, x.double(), eps=1.0, xi=1e-6, n_power=60)  # accurate in float64
    cos = {}
    for xi in (1e-6, DEFAULT_XI):
        r32 = vat_perturbation(model, x, eps=1.0, xi=xi, n_power=60)
        cos[xi] = F.cosine_similarity(r32.flatten(1).double(), r64.flatten(1), dim=1).abs()
    assert cos[DEFAULT_XI].min() > 0.99, cos[DEFAULT_XI]
    assert cos[1e-6].mean() < 0.9, f"xi=1e-6 unexpectedly accurate in float32: {cos[1e-6]}"


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=0.0), "eps"), (dict(eps=-1.0), "eps"), (dict(eps=1.0, xi=0.0), "xi"),
    (dict(eps=1.0, n_power=0), "n_power"), (dict(eps=1.0, n_power=1.5), "n_power"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    model = TinyNet()
    with pytest.raises(ValueError, match=match):
        vat_loss(model, torch.randn(2, 6), **kwargs)


def test_bad_inputs_raise_clear_errors():
    model = TinyNet()
    with pytest.raises(TypeError, match="floating-point"):
        vat_loss(model, torch.zeros(2, 6, dtype=torch.uint8), eps=1.0)
    with pytest.raises(ValueError, match="shape"):
        vat_loss(model, torch.zeros(6), eps=1.0)
    with pytest.raises(ValueError, match="logits"):
        vat_loss(model, torch.zeros(2, 6), eps=1.0, logits=torch.zeros(3, 4))


def test_entropy_loss_known_values():
    assert torch.isclose(entropy_loss(torch.zeros(3, 5)), torch.log(torch.tensor(5.0)))
    assert entropy_loss(torch.tensor([[100.0, 0.0, 0.0]])) < 1e-30
    with pytest.raises(ValueError):
        entropy_loss(torch.zeros(5))


def test_balance_loss_known_values_and_direction():
    from vatlib import balance_loss

    assert balance_loss(torch.zeros(5, 4)).abs() < 1e-7  # uniform predictions
    one_class = torch.tensor([[20.0, 0.0, 0.0, 0.0]]).repeat(6, 1)
    assert torch.isclose(balance_loss(one_class), torch.log(torch.tensor(4.0)), atol=1e-6)
    # Balanced but confident predictions are fine: only the marginal matters.
    assert balance_loss(torch.eye(4) * 30).abs() < 1e-6
    logits = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 2.0]], requires_grad=True)
    balance_loss(logits).backward()
    assert (logits.grad[:, 0] > 0).all() and (logits.grad[:, 1] < 0).all()  # descent lowers class 0, raises 1


def test_vat_loss_reductions():
    model = ConvNet(width=4).eval()
    x = torch.rand(5, 1, 28, 28)
    losses = {}
    for reduction in ("none", "mean", "sum"):
        torch.manual_seed(3)
        losses[reduction] = vat_loss(model, x, eps=1.0, reduction=reduction)
    assert losses["none"].shape == (5,) and bool((losses["none"] >= -1e-6).all())  # a KL, up to float32 rounding
    assert torch.allclose(losses["none"].mean(), losses["mean"]) and torch.allclose(losses["none"].sum(), losses["sum"])
    with pytest.raises(ValueError, match="reduction='avg' is invalid; allowed: mean, sum, none"):
        vat_loss(model, x, eps=1.0, reduction="avg")


def test_power_iteration_stays_float32_under_autocast():
    """In bfloat16 x + xi d rounds back to x, so the finite difference must run in float32: under
    autocast the direction is the float32 one, while the same finite difference in bfloat16 is noise."""
    from vatlib.vat import _kl_div_logits

    torch.manual_seed(0)
    model = ConvNet(width=8).train()
    x = torch.rand(6, 1, 28, 28)
    torch.manual_seed(1)
    r32 = vat_perturbation(model, x, eps=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)
        r_amp = vat_perturbation(model, x, eps=1.0)
        # The unguarded finite difference, as a naive loop under autocast would do it:
        with torch.no_grad():
            p = model(x)
        torch.manual_seed(1)
        d = l2_normalize(torch.randn_like(x)).requires_grad_(True)
        (grad,) = torch.autograd.grad(_kl_div_logits(p.float(), model(x + DEFAULT_XI * d).float()).sum(), d)
    cos = F.cosine_similarity(r32.flatten(1), r_amp.flatten(1))
    assert r_amp.dtype == torch.float32 and bool((cos > 0.9999).all()), cos
    naive = F.cosine_similarity(r32.flatten(1), grad.flatten(1))
    assert bool((naive.abs() < 0.9).all()), naive  # bfloat16: the direction is lost


def test_lds_and_logits_returns_the_perturbed_pass_it_scored():
    from vatlib.vat import lds_and_logits
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5), torch.nn.BatchNorm1d(5))
    x = torch.rand(8, 1, 4, 4)
    logits = model(x).detach()
    torch.manual_seed(1)
    per_sample, q_logits = lds_and_logits(model, x, logits, eps=2.0)
    torch.manual_seed(1)
    r_adv = vat_perturbation(model, x, eps=2.0, logits=logits)
    assert torch.allclose(q_logits, model(x + r_adv), atol=1e-6)  # the pass at x + r_adv, norm eps per sample
    # The KL, computed independently in float64 by torch's own kl_div.
    expected = torch.nn.functional.kl_div(q_logits.double().log_softmax(1), logits.double().log_softmax(1),
                                          log_target=True, reduction="none").sum(1)
    assert torch.allclose(per_sample.double(), expected, atol=1e-6)
    assert per_sample.requires_grad  # the loss trains through the perturbed pass
