"""The layer-wise tangent forward (:mod:`conelib.tangent`) and the primal cache against oracles, in
float64: the brute-force Taylor expansion f(theta_s) + J(theta_s) delta with J built one
``autograd.grad`` per example and logit, its transpose for the gradient, and the generic
``torch.func.jvp`` method; for every layer type with a rule, for a layer without one (the fallback),
for the conelib models, and through training (momentum, weight decay towards 0 or towards theta_s,
an output scale, BatchNorm in eval mode)."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conelib.linearize import LinearizedModel, linearize
from conelib.models import build
from conelib.models.layers import ChannelLayerNorm
from conelib.models.scaling import OutputScaled
from conelib.train import TrainConfig, train


def inputs(n: int, shape: tuple[int, ...] = (2, 8, 8), seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64)


def labels(n: int, c: int, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


def perturb(lin: LinearizedModel, scale: float = 0.05, seed: int = 3) -> dict[str, torch.Tensor]:
    """theta <- theta_s + delta with a random delta of relative size ``scale`` per tensor."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        for name, p in lin.theta().items():
            d = torch.randn(p.shape, generator=g, dtype=p.dtype)
            d = d / d.norm() * scale * max(float(p.norm()), 1e-2)
            p.add_(d)
            out[name] = d
    return out


def jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(n, c, P) by brute force: one autograd.grad per example and logit, eval mode."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i: i + 1]).reshape(-1)
        rows.append(torch.stack([
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[a], params, retain_graph=True,
                                                                   allow_unused=False)])
            for a in range(out.shape[0])]))
    return torch.stack(rows)


def taylor_oracle(net: nn.Module, lin: LinearizedModel, delta: dict[str, torch.Tensor], x: torch.Tensor):
    """f(x; theta_s) + J(x; theta_s) delta, and J, by brute force."""
    jac = jacobian(net, x)
    flat = torch.cat([delta[n].reshape(-1) for n in lin.param_names])
    with torch.no_grad():
        f0 = net.eval()(x)
    return f0 + torch.einsum("icp,p->ic", jac, flat), jac


def check_against_oracles(net: nn.Module, x: torch.Tensor, *, fallbacks: bool = False) -> LinearizedModel:
    """The layer-wise f_lin and its gradient equal the brute-force Taylor model's and the jvp
    method's; returns the linearized model."""
    net = net.double().eval()
    lin = linearize(net)
    ref = linearize(net, method="jvp")
    delta = perturb(lin)
    perturb(ref)
    expected, jac = taylor_oracle(net, lin, delta, x)
    out = lin(x)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(out, ref(x), rtol=1e-9, atol=1e-11)
    y = labels(x.shape[0], out.shape[1])
    F.cross_entropy(out, y).backward()
    logits = out.detach().requires_grad_()
    (g_f,) = torch.autograd.grad(F.cross_entropy(logits, y), [logits])
    expected_grad = torch.einsum("icp,ic->p", jac, g_f)  # J(theta_s)^T grad_f L
    got = torch.cat([lin.theta()[n].grad.reshape(-1) for n in lin.param_names])
    torch.testing.assert_close(got, expected_grad, rtol=1e-9, atol=1e-12)
    assert bool(lin.fallbacks) == fallbacks, lin.fallbacks
    return lin


# ------------------------------------------------------------------------------------------
# every layer type with a rule
# ------------------------------------------------------------------------------------------


class Residual(nn.Module):
    """conv -> BatchNorm (eval) -> relu, plus a shortcut, then max-pool, tanh, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.short = nn.Conv2d(2, 4, 1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x))) + self.short(x)
        return self.fc(torch.flatten(torch.tanh(self.pool(h)), 1))


class Norms(nn.Module):
    """Channel LayerNorm, nn.LayerNorm, F.layer_norm with parameters, BatchNorm1d, sigmoid, avg pools."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.cln = ChannelLayerNorm(3)
        self.avg = nn.AvgPool2d(2)
        self.flat = nn.Flatten()
        self.ln = nn.LayerNorm(48)
        self.fc = nn.Linear(48, 6)
        self.bn = nn.BatchNorm1d(6)
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, 6))
        self.b = nn.Parameter(torch.linspace(-0.2, 0.2, 6))
        self.out = nn.Linear(6, 4)

    def forward(self, x):
        h = self.flat(self.avg(self.cln(self.conv(x))))
        h = torch.sigmoid(self.bn(self.fc(self.ln(h))))
        h = F.layer_norm(h, (6,), self.w, self.b)
        return self.out(F.adaptive_avg_pool1d(h[:, None, :], 6)[:, 0])


class Functional(nn.Module):
    """Parameters used through functions: F.conv2d / F.linear with get_attr weights, ZeroPad2d,
    dropout (eval), cat, sub, div by a constant, neg, mean, a frozen scale."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.wc = nn.Parameter(torch.randn(3, 2, 3, 3, generator=g) * 0.3)
        self.bc = nn.Parameter(torch.randn(3, generator=g) * 0.1)
        self.pad = nn.ZeroPad2d(1)
        self.drop = nn.Dropout(0.5)
        self.wl = nn.Parameter(torch.randn(4, 6, generator=g) * 0.3)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 4), requires_grad=False)

    def forward(self, x):
        h = F.relu(F.conv2d(self.pad(x), self.wc, self.bc))  # (n, 3, 10, 10)
        h = self.drop(h)
        a, b = h.mean((2, 3)), h.sum((2, 3)) / 100.0
        z = torch.cat([a, -b], dim=1)  # (n, 6)
        return F.linear(z - 0.1, self.wl) * self.scale


@pytest.mark.parametrize("make", [Residual, Norms, Functional], ids=["residual_bn", "norms", "functional"])
def test_every_rule_matches_the_taylor_expansion_and_jvp(make) -> None:
    torch.manual_seed(0)
    net = make()
    for m in net.modules():  # BatchNorm statistics far from (0, 1): eval mode must use them
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    check_against_oracles(net, inputs(5))


class BatchNormVariants(nn.Module):
    """BatchNorm folded into the layer before it (a conv with a frozen weight; a linear layer with
    no affine BatchNorm after it) and not folded (a conv output used twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.conv.weight.requires_grad_(False)  # only the bias and the BatchNorm's gamma, beta move
        self.bn = nn.BatchNorm2d(3)
        self.twice = nn.Conv2d(3, 3, 1)
        self.bn2 = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 8 * 8, 6)
        self.bn3 = nn.BatchNorm1d(6, affine=False)
        self.out = nn.Linear(6, 4)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        z = self.twice(h)
        h = F.relu(self.bn2(z) + z)  # z has two users: its BatchNorm is not folded
        return self.out(self.bn3(self.fc(h.flatten(1))))


def test_batch_norm_folded_or_not_matches_the_taylor_expansion() -> None:
    torch.manual_seed(0)
    net = BatchNormVariants()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    lin = check_against_oracles(net, inputs(5))
    fused = {n.target for n in lin._tangent_program()._fused.values()}
    assert fused == {"bn", "bn3"}


@pytest.mark.parametrize("name,norm", [("lenet_300_100", None), ("lenet5", None), ("resnet20", "batchnorm"),
                                       ("resnet20", "layernorm"), ("resnet20", "none"), ("vgg16", "batchnorm")])
def test_conelib_models_match_the_taylor_expansion(name: str, norm: str | None) -> None:
    width = 0.25 if name in ("resnet20", "vgg16") else 0.1
    shape = (1, 8, 8) if name != "vgg16" else (1, 4, 4)
    net = build(name, input_shape=shape, num_classes=10, width=width, norm=norm, seed=0)
    check_against_oracles(net, inputs(3, shape))


def test_output_scale_matches_the_taylor_expansion() -> None:
    net = OutputScaled(build("lenet5", input_shape=(1, 8, 8), width=0.5, seed=0), alpha=8.0)
    with torch.no_grad():  # move away from theta_0, so that the reference network matters
        for p in net.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    check_against_oracles(net, inputs(4, (1, 8, 8)))


# ------------------------------------------------------------------------------------------
# the fallback for layers without a rule
# ------------------------------------------------------------------------------------------


class Unknown(nn.Module):
    """A torch.nn module without a rule (Softplus), a function without one (sin), and a trainable
    parameter through a function without one (exp)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 6)
        self.act = nn.Softplus()
        self.log_scale = nn.Parameter(torch.linspace(-0.3, 0.3, 6))
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.sin(self.act(self.fc1(x.flatten(1))))
        return self.fc2(h * self.log_scale.exp())


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = self.fc(x.flatten(1))
        return h if h.sum() > -1e9 else -h


def test_a_layer_without_a_rule_falls_back_to_jvp_and_is_named() -> None:
    lin = check_against_oracles(Unknown(), inputs(4, (2, 4)), fallbacks=True)
    text = " ".join(lin.fallbacks)
    assert "Softplus" in text and "sin" in text and "exp" in text
    assert "fc1" not in text and "fc2" not in text  # the layers with rules keep them


def test_an_untraceable_network_falls_back_as_a_whole() -> None:
    lin = check_against_oracles(Untraceable(), inputs(4, (2, 4)), fallbacks=True)
    assert lin.fallbacks[0].startswith("<whole network>")


def test_inside_a_torch_func_transform_the_jvp_method_is_used() -> None:
    net = build("lenet_300_100", input_shape=(1, 8, 8), width=0.1, seed=0).double()
    lin = linearize(net)
    perturb(lin)
    x = inputs(4, (1, 8, 8))
    per_example = torch.func.vmap(lambda xi: lin(xi[None])[0])(x)
    torch.testing.assert_close(per_example, lin(x), rtol=1e-12, atol=1e-12)


def test_method_is_checked() -> None:
    with pytest.raises(ValueError, match="method='taylor' is not known"):
        linearize(nn.Linear(2, 2), method="taylor")
    with pytest.raises(ValueError, match="primal_cache_bytes must be an integer >= 0"):
        linearize(nn.Linear(2, 2), primal_cache_bytes=-1)


# ------------------------------------------------------------------------------------------
# the primal cache
# ------------------------------------------------------------------------------------------


def test_forward_examples_equals_the_forward_and_reuses_the_primal() -> None:
    net = build("lenet5", input_shape=(1, 8, 8), seed=0).double()
    lin = linearize(net)
    x_all = inputs(20, (1, 8, 8))
    perturb(lin)
    idx = torch.tensor([3, 7, 11, 0])
    first = lin.forward_examples(x_all, idx)  # recorded
    torch.testing.assert_close(first, lin(x_all[idx]), rtol=1e-12, atol=1e-12)
    info = lin.primal_cache_info()
    assert info["enabled"] and info["examples"] == 4 and info["misses"] == 1 and info["hits"] == 0
    y = labels(4, 10)
    again = lin.forward_examples(x_all, idx.flip(0))  # replayed: every example is stored
    assert lin.primal_cache_info()["hits"] == 1
    torch.testing.assert_close(again, lin(x_all[idx.flip(0)]), rtol=1e-12, atol=1e-12)
    # the gradient through the replay is the gradient of the forward
    F.cross_entropy(again, y).backward()
    g_cached = [p.grad.clone() for p in lin.theta().values()]
    lin.zero_grad()
    F.cross_entropy(lin(x_all[idx.flip(0)]), y).backward()
    for a, b in zip(g_cached, (p.grad for p in lin.theta().values())):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_the_cache_follows_the_expansion_point_and_the_data() -> None:
    net = build("lenet_300_100", input_shape=(1, 8, 8), width=0.2, seed=0).double()
    lin = linearize(net)
    x_all = inputs(10, (1, 8, 8))
    idx = torch.arange(5)
    lin.forward_examples(x_all, idx)
    # a new expansion point loaded in place (as load_checkpoint does): the cache is dropped
    other = linearize(build("lenet_300_100", input_shape=(1, 8, 8), width=0.2, seed=1).double())
    lin.load_state_dict(other.state_dict())
    torch.testing.assert_close(lin.forward_examples(x_all, idx), other(x_all[idx]), rtol=1e-12, atol=1e-12)
    assert lin.primal_cache_info()["misses"] == 1
    # the data changed in place: dropped again
    with torch.no_grad():
        x_all.mul_(2.0)
    torch.testing.assert_close(lin.forward_examples(x_all, idx), other(x_all[idx]), rtol=1e-12, atol=1e-12)
    assert lin.primal_cache_info()["misses"] == 1 and lin.primal_cache_info()["hits"] == 0


def test_a_cache_over_its_bound_is_off_and_says_why() -> None:
    lin = linearize(build("lenet5", input_shape=(1, 8, 8), seed=0).double(), primal_cache_bytes=1000)
    x_all = inputs(10, (1, 8, 8))
    idx = torch.arange(4)
    for _ in range(2):
        torch.testing.assert_close(lin.forward_examples(x_all, idx), lin(x_all[idx]), rtol=0, atol=0)
    info = lin.primal_cache_info()
    assert not info["enabled"] and "over the bound" in info["reason"] and info["bytes"] == 0
    off = linearize(build("lenet5", input_shape=(1, 8, 8), seed=0), primal_cache_bytes=0)
    off.forward_examples(inputs(10, (1, 8, 8)).float(), idx)
    assert off.primal_cache_info()["reason"] == "not used yet"


def test_copies_do_not_carry_the_cache() -> None:
    lin = linearize(build("lenet_300_100", input_shape=(1, 8, 8), width=0.2, seed=0))
    lin.forward_examples(inputs(8, (1, 8, 8)).float(), torch.arange(4))
    assert lin.primal_cache_info()["bytes"] > 0
    assert copy.deepcopy(lin).primal_cache_info()["reason"] == "not used yet"


# ------------------------------------------------------------------------------------------
# training: the same trajectory through every path
# ------------------------------------------------------------------------------------------


class _Data:
    def __init__(self, n: int = 24) -> None:
        self.x_train, self.y_train = inputs(n, (1, 8, 8), seed=20), labels(n, 10, seed=21)
        self.x_test, self.y_test = inputs(8, (1, 8, 8), seed=22), labels(8, 10, seed=23)
        self.augment = False


@pytest.mark.parametrize("decay", ["none", "zero", "switch_point"])
@pytest.mark.parametrize("name,norm", [("lenet5", None), ("resnet20", "batchnorm")])
def test_training_follows_the_jvp_method(name: str, norm: str | None, decay: str) -> None:
    """SGD with momentum (and weight decay towards 0 or towards theta_s) on the linearized model:
    the layer-wise method with its primal cache (3 epochs of batches: recorded, then replayed), the
    layer-wise method without it, and torch.func.jvp give the same parameters."""
    net = build(name, input_shape=(1, 8, 8), num_classes=10, width=0.25 if norm else 0.5, norm=norm, seed=0)
    net = net.double()
    if norm == "batchnorm":
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                with torch.no_grad():
                    m.running_mean.uniform_(-0.3, 0.3)
                    m.running_var.uniform_(0.5, 2.0)
    cfg = TrainConfig(steps=9, batch_size=8, lr=0.05, momentum=0.9, weight_decay=0.0 if decay == "none" else 0.01)
    runs = {}
    for label, kw in {"cached": {}, "no_cache": {"primal_cache_bytes": 0}, "jvp": {"method": "jvp"}}.items():
        lin = linearize(net, **kw)
        center = list(lin.theta_s().values()) if decay == "switch_point" else None
        hist = train(lin, _Data(), cfg, snapshot_steps=[0, 9], progress=False, decay_center=center)
        runs[label] = (lin, hist)
    assert runs["cached"][0].primal_cache_info()["hits"] == 6  # 3 batches per epoch; epochs 2 and 3
    for label in ("no_cache", "jvp"):
        for a, b in zip(runs["cached"][0].parameters(), runs[label][0].parameters()):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(runs["cached"][1].test_loss, runs[label][1].test_loss, rtol=1e-9)


def test_training_with_augmentation_does_not_use_the_cache() -> None:
    data = _Data()
    data.augment = True
    lin = linearize(build("lenet_300_100", input_shape=(1, 8, 8), width=0.2, seed=0).double())
    train(lin, data, TrainConfig(steps=4, batch_size=8), progress=False)
    assert lin.primal_cache_info()["reason"] == "not used yet"


def test_the_switching_experiment_is_the_same_through_both_methods(tmp_path, monkeypatch) -> None:
    """A tiny switching run on scikit-learn digits, continued with the layer-wise method and with
    torch.func.jvp: the same curves to float tolerance (float32, a few dozen steps)."""
    import importlib

    sw = importlib.import_module("conelib.experiments.switching")

    cfg = sw.SwitchingConfig(model="lenet_300_100", dataset="digits", steps=30, batch_size=32, lr=0.05,
                             momentum=0.9, weight_decay=1e-3, switch_steps=(10, 20), eval_every=10, seed=0,
                             device="cpu")
    new = sw.switching(cfg, results_root=tmp_path / "new", progress=False)
    continuations = importlib.import_module("conelib.experiments.continuations")
    monkeypatch.setattr(continuations, "linearize", functools.partial(linearize, method="jvp"))
    old = sw.switching(cfg, results_root=tmp_path / "old", progress=False)
    for var in ("final_test_loss", "final_train_loss", "test_loss_curve", "lin_displacement"):
        np.testing.assert_allclose(new[var].values, old[var].values, rtol=1e-4, atol=1e-6, err_msg=var)
    n_test = int(new.attrs["n_test"])
    np.testing.assert_allclose(new["final_test_acc"].values, old["final_test_acc"].values, atol=1.5 / n_test)
