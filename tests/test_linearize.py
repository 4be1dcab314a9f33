"""The linearized model against oracles: the network itself, a model that is linear in its
parameters, Taylor's theorem, the network's gradient, a brute-force Jacobian, and the closed-form
kernel update with the eNTK of :func:`conelib.empirical_ntk` (float64 throughout)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conelib import empirical_ntk
from conelib.linearize import LinearizedModel, linearize
from conelib.models import build
from conelib.train import TrainConfig, load_checkpoint, make_optimizer, save_checkpoint, train

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]


class BNNet(nn.Module):
    """Conv -> BatchNorm -> tanh -> linear, with a frozen parameter (smooth in its parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 8 * 8, 5)
        self.frozen = nn.Parameter(torch.linspace(0.5, 1.5, 5), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.bn(self.conv(x))).flatten(1)) * self.frozen


def bn_net(device: str = "cpu") -> BNNet:
    """A BNNet whose running statistics are far from (0, 1), so eval and train mode differ."""
    torch.manual_seed(0)
    net = BNNet().double().to(device)
    with torch.no_grad():
        net.bn.running_mean.copy_(torch.tensor([0.3, -0.2, 0.5]))
        net.bn.running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
        net.bn.weight.copy_(torch.tensor([1.2, 0.8, 1.1]))
    return net


def small_net(name: str, device: str = "cpu") -> nn.Module:
    return build(name, input_shape=(1, 8, 8), num_classes=10, seed=0).double().to(device)


def inputs(n: int, device: str = "cpu", seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64).to(device)


def labels(n: int, c: int, device: str = "cpu", seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, c, (n,), generator=g).to(device)


def random_direction(model: nn.Module, scale: float, seed: int = 3) -> dict[str, torch.Tensor]:
    """A random direction over the trainable parameters, each tensor scaled to ``scale * |p|``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            d = torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device)
            out[name] = d / d.norm() * scale * max(float(p.detach().norm()), 1e-3)
    return out


def move_linearized(lin: LinearizedModel, delta: dict[str, torch.Tensor]) -> None:
    """theta <- theta_s + delta (in place, without autograd)."""
    anchor = lin.theta_s()
    with torch.no_grad():
        for name, p in lin.theta().items():
            p.copy_(anchor[name] + delta[name])


def moved_network(model: nn.Module, delta: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` at theta_s + delta (eval mode): the oracle f(x; theta)."""
    import copy

    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name in delta:
                p.add_(delta[name])
    return net


def oracle_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(n, c, P): one autograd.grad per example and logit, eval mode (brute force)."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i : i + 1]).reshape(-1)
        rows.append(torch.stack([
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[a], params, retain_graph=True)])
            for a in range(out.shape[0])
        ]))
    return torch.stack(rows)


def flat(d: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([d[n].reshape(-1) for n in names])


# ------------------------------------------------------------------------------------------
# the four oracles of the issue
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5", "bn"])
def test_equals_the_network_at_the_expansion_point(name: str, device: str) -> None:
    net = bn_net(device) if name == "bn" else small_net(name, device)
    x = inputs(6, device)
    lin = linearize(net)
    expected = net.eval()(x)
    lin.train()  # the wrapper's mode must not matter
    torch.testing.assert_close(lin(x), expected, rtol=0, atol=1e-12)
    lin.eval()
    torch.testing.assert_close(lin(x), expected, rtol=0, atol=1e-12)
    assert lin(x).device == x.device and lin(x).dtype == torch.float64


def test_batchnorm_is_evaluated_with_running_statistics() -> None:
    net = bn_net()
    x = inputs(6)
    lin = linearize(net)
    stats = (net.bn.running_mean.clone(), net.bn.running_var.clone())
    expected = net.eval()(x)
    lin.train()
    out = lin(x)
    train_mode = bn_net().train()(x)  # what a train-mode linearization would have expanded
    assert (out - train_mode).abs().max() > 1e-3
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert not lin.net.training and lin.training
    torch.testing.assert_close(lin.net.bn.running_mean, stats[0], rtol=0, atol=0)
    torch.testing.assert_close(lin.net.bn.running_var, stats[1], rtol=0, atol=0)


class LinearInParams(nn.Module):
    """f(x; W, b) = W phi(x) + b with fixed non-linear features phi: linear in (W, b)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 20), nn.Tanh())
        self.features.requires_grad_(False)
        self.head = nn.Linear(20, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.mark.parametrize("device", DEVICES)
def test_exact_for_a_model_linear_in_its_parameters(device: str) -> None:
    net = LinearInParams().double().to(device)
    lin = linearize(net)
    assert lin.param_names == ("head.weight", "head.bias")  # frozen features are not theta
    delta = random_direction(net, scale=3.0)
    move_linearized(lin, delta)
    x = inputs(7, device)
    oracle = moved_network(net, delta)(x)
    assert (oracle - net(x)).abs().max() > 0.1  # theta really moved
    torch.testing.assert_close(lin(x), oracle, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lin.network_output(x), oracle, rtol=1e-12, atol=1e-12)


def _loglog_slope(eps: np.ndarray, err: np.ndarray) -> float:
    return float(np.polyfit(np.log(eps), np.log(err), 1)[0])


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5", "bn"])
def test_taylor_error_shrinks_quadratically(name: str) -> None:
    """|f(theta_s + eps d) - f_lin(theta_s + eps d)| = O(eps^2) (Taylor's theorem): the log-log
    slope of the error against eps is 2, and that of the first-order term's size is 1.

    ReLU and max-pool networks are polynomial in theta only between kinks; the steps are small
    enough (float64) that no pre-activation changes sign, as happens from eps ~ 1e-4 on here."""
    net = bn_net() if name == "bn" else small_net(name)
    x = inputs(8)
    lin = linearize(net)
    f0 = net.eval()(x).detach()
    eps = np.array([3e-5, 1e-5, 3e-6, 1e-6])
    err, first = [], []
    for e in eps:
        delta = random_direction(net, scale=float(e))
        move_linearized(lin, delta)
        with torch.no_grad():
            f = moved_network(net, delta)(x)
            fl = lin(x)
        err.append(float((f - fl).norm()))
        first.append(float((fl - f0).norm()))
    assert 1.9 < _loglog_slope(eps, np.array(err)) < 2.1, err
    assert 0.99 < _loglog_slope(eps, np.array(first)) < 1.01, first
    assert err[-1] < 1e-3 * first[-1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5", "bn"])
def test_gradient_at_the_expansion_point_equals_the_networks(name: str, device: str) -> None:
    net = bn_net(device) if name == "bn" else small_net(name, device)
    x, y = inputs(6, device), labels(6, 10 if name != "bn" else 5, device)
    lin = linearize(net)
    lin.train()
    F.cross_entropy(lin(x), y).backward()
    net.eval().zero_grad()
    F.cross_entropy(net(x), y).backward()
    grads = dict(net.named_parameters())
    assert set(lin.theta()) == {n for n, p in grads.items() if p.requires_grad}
    for n, p in lin.theta().items():
        assert p.grad is not None, n
        torch.testing.assert_close(p.grad, grads[n].grad, rtol=1e-10, atol=1e-12)


def test_gradient_away_from_the_expansion_point_is_the_frozen_jacobian_transpose() -> None:
    """At theta != theta_s: grad_theta L(f_lin) = J(theta_s)^T grad_f L(f_lin), J brute force."""
    net = small_net("lenet_300_100")
    x, y = inputs(3), labels(3, 10)
    lin = linearize(net)
    move_linearized(lin, random_direction(net, scale=0.2))
    out = lin(x)
    loss = F.cross_entropy(out, y)
    loss.backward()
    logits = out.detach().requires_grad_()
    (g_f,) = torch.autograd.grad(F.cross_entropy(logits, y), [logits])
    jac = oracle_jacobian(net, x)  # (n, c, P) at theta_s
    names = list(lin.param_names)
    expected = torch.einsum("icp,ic->p", jac, g_f)
    got = flat({n: p.grad for n, p in lin.theta().items()}, names)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # and the network's own gradient at the moved point differs (it is not frozen)
    net_moved = moved_network(net, lin.delta())
    F.cross_entropy(net_moved(x), y).backward()
    g_net = flat({n: p.grad for n, p in net_moved.named_parameters()}, names)
    assert (g_net - expected).norm() > 1e-3 * expected.norm()


# ------------------------------------------------------------------------------------------
# linearized training is kernel gradient descent with the frozen eNTK
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lenet_300_100", "bn"])
def test_sgd_steps_follow_the_frozen_entk(name: str) -> None:
    """Plain SGD on the linearized model moves its outputs on any x exactly by
    -lr * sum_j Theta_s(x, x_j) grad_{f_j} L, with Theta_s = empirical_ntk(net at theta_s, "full"),
    at the first step and at later steps alike (the kernel never changes)."""
    net = bn_net() if name == "bn" else small_net(name)
    c = 5 if name == "bn" else 10
    xb, yb = inputs(6, seed=10), labels(6, c, seed=11)  # the batch
    xe = inputs(4, seed=12)  # where the outputs are watched
    theta_k = empirical_ntk(net, xe, xb, kind="full", method="jacobian")  # (4, 6, c, c)
    lin = linearize(net)
    lr = 0.5
    opt = make_optimizer(lin.parameters(), TrainConfig(steps=1, lr=lr, momentum=0.0, weight_decay=0.0))
    for _ in range(3):
        before = lin(xe).detach()
        logits = lin(xb)
        loss = F.cross_entropy(logits, yb)
        (g_f,) = torch.autograd.grad(loss, [logits], retain_graph=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        expected = before - lr * torch.einsum("ijab,jb->ia", theta_k, g_f)
        torch.testing.assert_close(lin(xe).detach(), expected, rtol=1e-9, atol=1e-11)
    # the network itself does not follow the frozen kernel
    net_moved = moved_network(net, lin.delta())
    assert (net_moved(xe) - lin(xe)).abs().max() > 1e-8


# ------------------------------------------------------------------------------------------
# plumbing: training loop, checkpoints, optimizer state, errors
# ------------------------------------------------------------------------------------------


def test_state_dict_round_trips_through_checkpoints(tmp_path: Path) -> None:
    net = bn_net()
    lin = linearize(net)
    move_linearized(lin, random_direction(net, scale=0.1))
    opt = make_optimizer(lin.parameters(), TrainConfig(steps=1))
    x, y = inputs(4), labels(4, 5)
    F.cross_entropy(lin(x), y).backward()
    opt.step()
    path = save_checkpoint(tmp_path / "lin.pt", lin, opt, 1, TrainConfig(steps=1))
    other = linearize(BNNet().double())  # a different expansion point and theta
    opt2 = make_optimizer(other.parameters(), TrainConfig(steps=1))
    load_checkpoint(path, other, opt2)
    torch.testing.assert_close(other(x), lin(x), rtol=0, atol=0)
    for n in lin.param_names:
        torch.testing.assert_close(other.theta_s()[n], lin.theta_s()[n], rtol=0, atol=0)
    assert sorted(k for k in lin.state_dict() if k.startswith("anchor.")) == sorted(
        f"anchor.{n}" for n in lin.param_names)


def test_network_optimizer_state_loads_into_the_linearized_model() -> None:
    """The 'carried' switching policy: the network's momentum buffers fit the linearized model's
    parameters one to one (same order and shapes)."""
    net = small_net("lenet5")
    cfg = TrainConfig(steps=1, lr=0.1, momentum=0.9)
    opt = make_optimizer(net.parameters(), cfg)
    x, y = inputs(4), labels(4, 10)
    F.cross_entropy(net(x), y).backward()
    opt.step()
    lin = linearize(net)
    opt_lin = make_optimizer(lin.parameters(), cfg)
    opt_lin.load_state_dict(opt.state_dict())
    bufs = [opt_lin.state[p]["momentum_buffer"] for p in lin.parameters()]
    for b, p in zip(bufs, net.parameters()):
        torch.testing.assert_close(b, opt.state[p]["momentum_buffer"], rtol=0, atol=0)


class _Data:
    def __init__(self, n: int = 32) -> None:
        self.x_train, self.y_train = inputs(n, seed=20), labels(n, 5, seed=21)
        self.x_test, self.y_test = inputs(n // 2, seed=22), labels(n // 2, 5, seed=23)
        self.augment = False


def test_trains_with_conelib_train_and_keeps_batchnorm_frozen() -> None:
    net = bn_net()
    lin = linearize(net)
    stats = lin.net.bn.running_mean.clone()
    anchor = {k: v.clone() for k, v in lin.theta_s().items()}
    hist = train(lin, _Data(), TrainConfig(steps=5, batch_size=8, lr=0.2, momentum=0.9), snapshot_steps=[0, 5],
                 progress=False)
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert not lin.net.training
    torch.testing.assert_close(lin.net.bn.running_mean, stats, rtol=0, atol=0)
    for k, v in lin.theta_s().items():
        torch.testing.assert_close(v, anchor[k], rtol=0, atol=0)
    assert lin.displacement_norm() > 0
    # the network itself was not touched
    params = dict(net.named_parameters())
    for n, q in lin.theta_s().items():
        torch.testing.assert_close(params[n], q, rtol=0, atol=0)


def test_moves_with_dtype_and_device_like_a_module() -> None:
    lin = linearize(build("lenet_300_100", input_shape=(1, 8, 8), seed=0))
    assert all(v.dtype == torch.float32 for v in lin.state_dict().values())
    lin = lin.double()
    assert all(v.dtype == torch.float64 for v in lin.state_dict().values())
    assert lin(inputs(2)).dtype == torch.float64


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        linearize("lenet5")  # type: ignore[arg-type]
    frozen = nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        linearize(frozen)
    lin = linearize(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="already a LinearizedModel"):
        linearize(lin)
    with pytest.raises(ValueError, match="mode must be a bool"):
        lin.train("yes")  # type: ignore[arg-type]


def test_benchmark_script_runs(tmp_path: Path) -> None:
    """Smoke test of benchmarks/linearized_step.py: one repeat, tiny batch; no timing assertion."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import linearized_step

    out = tmp_path / "bench.csv"
    rows = linearized_step.main(["--models", "lenet5", "lenet_300_100", "--batch-size", "4", "--repeats", "1",
                                 "--warmup", "0", "--cache-examples", "8", "--clock", "cpu", "--out", str(out)])
    assert [r["model"] for r in rows] == ["lenet5", "lenet_300_100"]
    text = out.read_text().splitlines()
    assert text[0].split(",") == list(linearized_step.COLUMNS) and len(text) == 3
    # the ratios are what the timings say (to 3 significant digits), whatever they are: a smoke test
    # must not depend on timing (a first call can take 100x longer than the next)
    for r in rows:
        for kind, ratio in (("linearized", "ratio"), ("cached", "cached_ratio"), ("jvp", "jvp_ratio")):
            assert math.isfinite(r[ratio]) and r[ratio] == pytest.approx(r[f"{kind}_ms"] / r["standard_ms"], rel=5e-3)
        assert r["cache_bytes_per_example"] > 0 and r["clock"] == "cpu"
    only = linearized_step.main(["--models", "lenet5", "--batch-size", "4", "--repeats", "1", "--warmup", "0",
                                 "--kinds", "linearized"])
    assert math.isnan(only[0]["jvp_ms"]) and math.isfinite(only[0]["ratio"])
