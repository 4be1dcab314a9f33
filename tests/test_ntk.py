"""eNTK against a brute-force oracle: a plain autograd loop over examples and logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conelib import models
from conelib.ntk import KINDS, METHODS, empirical_ntk, estimate_cost, ntk_fn, profile_model


def oracle_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(n, c, P): one autograd.grad call per example and logit, eval mode."""
    params = [p for p in model.parameters() if p.requires_grad]
    was = model.training
    model.eval()
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i : i + 1]).reshape(-1)
        per_logit = []
        for a in range(out.shape[0]):
            grads = torch.autograd.grad(out[a], params, retain_graph=True, allow_unused=True)
            per_logit.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]))
        rows.append(torch.stack(per_logit))
    model.train(was)
    return torch.stack(rows)


def oracle_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None, kind: str) -> torch.Tensor:
    j1 = oracle_jacobian(model, x1)
    j2 = j1 if x2 is None else oracle_jacobian(model, x2)
    full = torch.einsum("iap,jbp->ijab", j1, j2)
    if kind == "full":
        return full
    if kind == "trace":
        return full.diagonal(dim1=2, dim2=3).sum(-1)
    return full.sum((2, 3))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class BNNet(nn.Module):
    """A small conv net with BatchNorm, a bias-free layer, a frozen parameter and a 2-D output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.lin = nn.Linear(3 * 5 * 5, 4, bias=False)
        self.frozen = nn.Parameter(torch.ones(4), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.bn(self.conv(x)))
        return self.lin(h.flatten(1)) * self.frozen


def _bn_net(dtype: torch.dtype) -> BNNet:
    torch.manual_seed(0)
    net = BNNet().to(dtype)
    # non-trivial running statistics, so that eval mode differs from train mode
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 2, 5, 5, dtype=dtype) * 2 + 1)
    return net


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", KINDS)
def test_bn_net_matches_oracle_float64(kind: str, method: str) -> None:
    net = _bn_net(torch.float64)
    x1 = torch.randn(5, 2, 5, 5, dtype=torch.float64)
    x2 = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    for a, b in [(x1, None), (x1, x2)]:
        got = empirical_ntk(net, a, b, kind=kind, method=method)
        assert rel_err(got, oracle_ntk(net, a, b, kind)) < 1e-10
    assert net.training, "the model's train/eval mode must be restored"


@pytest.mark.parametrize("method", ["jacobian", "ntvp"])
def test_tiny_memory_limit_forces_chunks_same_result(method: str) -> None:
    net = _bn_net(torch.float64)
    x1 = torch.randn(7, 2, 5, 5, dtype=torch.float64)
    x2 = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    for kind in KINDS:
        ref = oracle_ntk(net, x1, x2, kind)
        got = empirical_ntk(net, x1, x2, kind=kind, method=method, memory_limit=1)  # one example per chunk
        assert rel_err(got, ref) < 1e-10
        sym = empirical_ntk(net, x1, kind=kind, method=method, memory_limit=1)
        assert rel_err(sym, oracle_ntk(net, x1, None, kind)) < 1e-10


REGISTRY_CASES = [
    ("lenet_300_100", {}, (1, 28, 28)),
    ("lenet5", {}, (1, 28, 28)),
    ("resnet20", {"norm": "batchnorm"}, (3, 32, 32)),
    ("resnet20", {"norm": "layernorm"}, (3, 32, 32)),
    ("vgg16", {"norm": "batchnorm", "width": 0.125}, (3, 32, 32)),  # 8..64 channels: the oracle stays fast
    ("resnet20", {"norm": "none", "width": 0.5}, (1, 28, 28)),  # an MNIST image entering a CIFAR network
]


@pytest.mark.parametrize("name,kw,shape", REGISTRY_CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_registry_models_match_oracle(name: str, kw: dict, shape: tuple, dtype: torch.dtype, tol: float) -> None:
    model = models.build(name, input_shape=shape, num_classes=10, seed=0, **kw).to(dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, *shape, generator=gen, dtype=dtype)
    x2 = torch.randn(2, *shape, generator=gen, dtype=dtype)
    ref64 = {k: oracle_ntk(model.double(), x.double(), x2.double(), k) for k in KINDS}
    model.to(dtype)
    for method in ("jacobian", "ntvp"):
        for kind in KINDS:
            got = empirical_ntk(model, x, x2, kind=kind, method=method)
            assert got.dtype == dtype
            assert rel_err(got.double(), ref64[kind]) < tol, (name, method, kind)


def test_structure_symmetric_psd_and_layout_identities() -> None:
    model = models.build("lenet5", input_shape=(1, 28, 28), seed=3).double()
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    full = empirical_ntk(model, x, kind="full", method="jacobian")
    trace = empirical_ntk(model, x, kind="trace", method="jacobian")
    lsum = empirical_ntk(model, x, kind="logit_sum", method="jacobian")
    n, c = 6, 10
    assert full.shape == (n, n, c, c)
    # trace = sum of the diagonal logit blocks; logit_sum = sum of all blocks
    assert torch.allclose(trace, full.diagonal(dim1=2, dim2=3).sum(-1), rtol=1e-12, atol=0)
    assert torch.allclose(lsum, full.sum((2, 3)), rtol=1e-12, atol=1e-12 * float(full.abs().max()))
    # symmetric and PSD (as an (nc, nc) matrix)
    mat = full.permute(0, 2, 1, 3).reshape(n * c, n * c)
    assert torch.allclose(mat, mat.T, rtol=1e-12, atol=0)
    eig = torch.linalg.eigvalsh(mat)
    assert eig.min() > -1e-10 * eig.max()
    for k in (trace, lsum):
        assert torch.allclose(k, k.T, rtol=1e-12, atol=0)
        ev = torch.linalg.eigvalsh(k)
        assert ev.min() > -1e-10 * ev.max()


def test_ntk_fn_tracks_current_parameters() -> None:
    model = models.build("lenet_300_100", input_shape=(1, 8, 8), seed=0).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    kernel = ntk_fn(model, kind="trace")
    before = kernel(x)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    after = kernel(x)
    assert not torch.allclose(before, after)
    assert rel_err(after, oracle_ntk(model, x, None, "trace")) < 1e-10


def test_auto_picks_cheaper_estimate() -> None:
    mlp = models.build("lenet_300_100", input_shape=(1, 28, 28), seed=0)
    prof = profile_model(mlp, torch.zeros(1, 1, 28, 28))
    assert prof.n_params == sum(p.numel() for p in mlp.parameters())
    assert prof.n_logits == 10
    # an MLP's forward costs about 2 FLOPs per weight
    assert 1.5 * prof.n_params < prof.forward_flops < 3 * prof.n_params
    # for the trace kernel the Jacobian contraction is cheaper than c·n NTK-vector products
    assert estimate_cost(prof, 64, 64, "trace", "jacobian") < estimate_cost(prof, 64, 64, "trace", "ntvp")


@pytest.mark.parametrize(
    "kwargs,match",
    [({"kind": "diag"}, "kind"), ({"method": "fast"}, "method"), ({"memory_limit": 0}, "memory_limit")],
)
def test_bad_arguments_name_the_parameter(kwargs: dict, match: str) -> None:
    model = models.build("lenet_300_100", input_shape=(1, 8, 8), seed=0)
    with pytest.raises(ValueError, match=match):
        empirical_ntk(model, torch.zeros(2, 1, 8, 8), **kwargs)


def test_mismatched_inputs_raise() -> None:
    model = models.build("lenet_300_100", input_shape=(1, 8, 8), seed=0)
    with pytest.raises(ValueError, match="x2"):
        empirical_ntk(model, torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="x1"):
        empirical_ntk(model, torch.zeros(0, 1, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu() -> None:
    model = models.build("resnet20", input_shape=(3, 32, 32), seed=0, norm="layernorm").double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    cpu = empirical_ntk(model, x, kind="full")
    gpu = empirical_ntk(model.cuda(), x.cuda(), kind="full")
    assert gpu.is_cuda
    assert rel_err(gpu.cpu(), cpu) < 1e-10
