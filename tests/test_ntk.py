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


# --------------------------------------------------------------------------------------------
# the structured method (conelib.ntk_structured)
# --------------------------------------------------------------------------------------------

from conelib import ntk_structured  # noqa: E402
from conelib.ntk import choose_method  # noqa: E402


def _layouts(full: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"full": full, "trace": full.diagonal(dim1=2, dim2=3).sum(-1), "logit_sum": full.sum((2, 3))}


@pytest.mark.parametrize("name,kw,shape", REGISTRY_CASES)
def test_structured_registry_models_match_oracle_float64(name: str, kw: dict, shape: tuple) -> None:
    model = models.build(name, input_shape=shape, num_classes=10, seed=0, **kw).double()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, *shape, generator=gen, dtype=torch.float64)
    x2 = torch.randn(2, *shape, generator=gen, dtype=torch.float64)
    j1, j2 = oracle_jacobian(model, x), oracle_jacobian(model, x2)  # once; every layout from them
    refs = {None: _layouts(torch.einsum("iap,jbp->ijab", j1, j1)), "x2": _layouts(torch.einsum("iap,jbp->ijab", j1, j2))}
    for kind in KINDS:
        for key, b in ((None, None), ("x2", x2)):
            got = empirical_ntk(model, x, b, kind=kind, method="structured")
            assert rel_err(got, refs[key][kind]) < 1e-10, (name, kind, key)


def test_structured_float32_keeps_dtype_and_agrees() -> None:
    model = models.build("lenet5", input_shape=(1, 28, 28), seed=0)
    x = torch.randn(4, 1, 28, 28)
    got = empirical_ntk(model, x, kind="full", method="structured")
    assert got.dtype == torch.float32
    ref = oracle_ntk(model.double(), x.double(), None, "full")
    assert rel_err(got.double(), ref) < 1e-5


def test_structured_plans_every_linear_and_conv_of_the_registry() -> None:
    lenet = models.build("lenet5", input_shape=(1, 28, 28), seed=0).eval()
    plan = ntk_structured.plan_structured(lenet, torch.zeros(1, 1, 28, 28))
    assert [l.module for l in plan.layers] == ["conv1", "conv2", "fc1", "fc2", "fc"]
    assert plan.rest == () and plan.skipped == () and plan.n_logits == 10
    conv1 = plan.layers[0]
    assert (conv1.out_features, conv1.in_features, conv1.positions) == (6, 25, 28 * 28)
    resnet = models.build("resnet20", input_shape=(3, 32, 32), seed=0, norm="layernorm").eval()
    plan = ntk_structured.plan_structured(resnet, torch.zeros(1, 3, 32, 32))
    n_conv = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in resnet.modules())
    assert len(plan.layers) == n_conv
    # the LayerNorm affines are left to the Jacobian path, nothing else
    norm_params = {k for k, _ in resnet.named_parameters() if ".weight" in k or ".bias" in k} - {
        name for l in plan.layers for name in (l.weight, l.bias) if name
    }
    assert set(plan.rest) == norm_params and all("norm" in k or "shortcut.1" in k for k in plan.rest)


class OddNet(nn.Module):
    """Every case the structured planner must handle: odd convolutions, sequences, sharing."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, (3, 2), stride=(2, 1), dilation=(1, 2), padding=(1, 2), padding_mode="reflect")
        self.c2 = nn.Conv2d(3, 4, 3, padding="same", bias=False)
        self.c3 = nn.Conv2d(4, 4, 2, padding="valid")
        self.c3.bias.requires_grad_(False)  # frozen bias: the weight stays structured
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)  # not structured: Jacobian path
        self.seq = nn.Linear(4, 5)  # applied to a sequence of positions (S > 1)
        self.twice = nn.Linear(5, 5)  # called twice: weight sharing
        self.peek = nn.Linear(5, 6)  # weight also used outside its forward
        self.enc = nn.Linear(6, 6)
        self.dec = nn.Linear(6, 6)
        self.dec.weight = self.enc.weight  # tied weights
        self.unused = nn.Linear(3, 3)  # never called
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.c1(x))
        h = torch.tanh(self.c2(h))
        h = torch.tanh(self.grouped(torch.tanh(self.c3(h))))
        s = torch.tanh(self.seq(h.flatten(2).transpose(1, 2)))  # (b, positions, 5)
        s = torch.tanh(self.twice(torch.tanh(self.twice(s)))).mean(1)
        p = torch.tanh(self.peek(s)) + 0.1 * self.peek.weight.sum(1)
        p = torch.tanh(self.dec(torch.tanh(self.enc(p))))
        return self.head(p)


def _odd(dtype: torch.dtype = torch.float64) -> OddNet:
    torch.manual_seed(3)
    return OddNet().to(dtype)


def test_structured_planner_falls_back_exactly_where_it_must() -> None:
    net = _odd().eval()
    plan = ntk_structured.plan_structured(net, torch.zeros(1, 2, 7, 6, dtype=torch.float64))
    assert [l.module for l in plan.layers] == ["c1", "c2", "c3", "seq", "head"]
    reasons = dict(plan.skipped)
    assert set(reasons) == {"grouped", "twice", "peek", "enc", "dec", "unused"}
    assert "groups" in reasons["grouped"] and "2 times" in reasons["twice"]
    assert "outside" in reasons["peek"] and "shared" in reasons["enc"] and "not called" in reasons["unused"]
    by = {l.module: l for l in plan.layers}
    assert by["c2"].bias is None and by["c3"].bias is None and by["c1"].bias == "c1.bias"
    assert by["seq"].positions > 1 and by["head"].positions == 1
    assert by["c1"].pad == (2, 2, 1, 1) and by["c1"].padding_mode == "reflect"
    assert "c3.bias" not in plan.rest and "grouped.weight" in plan.rest and "enc.weight" in plan.rest


@pytest.mark.parametrize("kind", KINDS)
def test_structured_odd_net_matches_oracle(kind: str) -> None:
    net = _odd()
    gen = torch.Generator().manual_seed(4)
    x1 = torch.randn(4, 2, 7, 6, generator=gen, dtype=torch.float64)
    x2 = torch.randn(3, 2, 7, 6, generator=gen, dtype=torch.float64)
    for b in (None, x2):
        got = empirical_ntk(net, x1, b, kind=kind, method="structured")
        assert rel_err(got, oracle_ntk(net, x1, b, kind)) < 1e-10


@pytest.mark.parametrize("mode", ntk_structured.LAYER_MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_structured_both_layer_modes_and_symmetric_blocks(mode: str, kind: str) -> None:
    """Every layer forced into one mode (Gram of positions for convolutions and sequences,
    formed Jacobians for Linear layers); n = 9 exercises the blocked symmetric contraction."""
    from conelib.ntk import _Functional, eval_mode

    net = _odd()
    x = torch.randn(9, 2, 7, 6, dtype=torch.float64)
    x2 = torch.randn(2, 2, 7, 6, dtype=torch.float64)
    with eval_mode(net):
        plan = ntk_structured.plan_structured(net, x)
        fn = _Functional.of(net)
        modes = {l.module: mode for l in plan.layers}
        for b in (None, x2):
            got = ntk_structured.structured_ntk(net, fn.params, fn.frozen, plan, x, b, kind, 2**30, modes=modes)
            assert rel_err(got, oracle_ntk(net, x, b, kind)) < 1e-10, (mode, kind, b is None)


@pytest.mark.parametrize("kind", KINDS)
def test_structured_blocked_symmetric_contraction_equals_plain(kind: str) -> None:
    """The blocked SYRK (upper blocks, mirrored) against the plain block product, on features
    with a rest-parameter Jacobian, formed-Jacobian layers and Gram layers of 1 and S positions."""
    from conelib.ntk import _Functional, eval_mode

    net = _odd()
    x = torch.randn(8, 2, 7, 6, dtype=torch.float64)
    with eval_mode(net):
        plan = ntk_structured.plan_structured(net, x)
        fn = _Functional.of(net)
        for mode in ntk_structured.LAYER_MODES:
            modes = {l.module: mode for l in plan.layers}
            f = ntk_structured._features(net, fn.params, fn.frozen, plan, modes, x, kind, pass_size=3)
            plain = ntk_structured._contract(f, f, kind)
            for min_rows in (1, 2, 3):
                blocked = ntk_structured._contract_symmetric(f, kind, min_rows=min_rows)
                assert rel_err(blocked, plain) < 1e-13, (mode, min_rows)


def test_structured_tiny_memory_limit_forces_chunks_same_result() -> None:
    net = _bn_net(torch.float64)
    x1 = torch.randn(7, 2, 5, 5, dtype=torch.float64)
    x2 = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    for kind in KINDS:
        got = empirical_ntk(net, x1, x2, kind=kind, method="structured", memory_limit=1)
        assert rel_err(got, oracle_ntk(net, x1, x2, kind)) < 1e-10
        sym = empirical_ntk(net, x1, kind=kind, method="structured", memory_limit=1)
        assert rel_err(sym, oracle_ntk(net, x1, None, kind)) < 1e-10


def test_structured_layer_costs_follow_the_formulas() -> None:
    """FLOP formulas of the two modes against a direct count for a Linear and a conv layer."""
    lin = ntk_structured.StructuredLayer("l", "linear", "l.weight", "l.bias", 300, 784, 1, (1, 784), (1, 300))
    n, c = 64, 10
    pairs = n * (n + 1) / 2
    costs = ntk_structured.layer_costs(lin, n, n, "full", c, symmetric=True)
    assert costs["gram"] == pytest.approx(2 * pairs * 785 + 2 * pairs * c * c * 300 + pairs * c * c)
    assert costs["jacobian"] == pytest.approx(2 * n * c * 300 * 785 + 2 * pairs * c * c * 300 * 785)
    assert costs["gram"] < costs["jacobian"]
    conv = ntk_structured.StructuredLayer("c", "conv2d", "c.weight", None, 6, 25, 784, (1, 1, 28, 28), (1, 6, 28, 28))
    costs = ntk_structured.layer_costs(conv, n, n, "trace", c, symmetric=True)
    assert costs["jacobian"] < costs["gram"]  # many positions: form the Jacobian


def test_auto_prefers_structured_where_it_is_cheaper() -> None:
    mlp = models.build("lenet_300_100", input_shape=(1, 28, 28), seed=0)
    prof = profile_model(mlp, torch.zeros(1, 1, 28, 28))
    assert prof.structured is not None and prof.n_rest_params == 0
    for kind in KINDS:
        s = estimate_cost(prof, 128, 128, kind, "structured", symmetric=True)
        j = estimate_cost(prof, 128, 128, kind, "jacobian", symmetric=True)
        assert s < j / 10
        assert choose_method(prof, 128, 128, kind, symmetric=True) == "structured"
    lenet = models.build("lenet5", input_shape=(1, 28, 28), seed=0)
    prof = profile_model(lenet, torch.zeros(1, 1, 28, 28))
    assert choose_method(prof, 256, 256, "full", symmetric=True) == "structured"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_structured_cuda_matches_cpu() -> None:
    model = models.build("resnet20", input_shape=(3, 32, 32), seed=0, norm="layernorm").double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    cpu = empirical_ntk(model, x, kind="full", method="structured")
    gpu = empirical_ntk(model.cuda(), x.cuda(), kind="full", method="structured")
    assert gpu.is_cuda
    assert rel_err(gpu.cpu(), cpu) < 1e-10


def _load_bench():  # type: ignore[no-untyped-def]
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "ntk_bench.py"
    spec = importlib.util.spec_from_file_location("ntk_bench", path)
    bench = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["ntk_bench"] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.parametrize("arg", ["vgg16=256", "resnet20=abc", "resnet20=64", "resnet20"])
def test_benchmark_max_n_rejects_bad_values(arg: str) -> None:
    with pytest.raises(ValueError, match="--max-n"):
        _load_bench().parse(["--max-n", arg])


def test_benchmark_max_n_caps_one_model() -> None:
    _, opts = _load_bench().parse(["--max-n", "resnet20=256"])
    assert opts.sizes_for("resnet20") == [128, 256] and opts.sizes_for("lenet5") == [128, 256, 512]


def test_benchmark_smoke_kernels_agree(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """benchmarks/ntk_bench.py --smoke: conelib's methods, the torch.func tutorial recipe and the
    naive loop on the LeNets (n = 8, one repeat, in process, no neural-tangents) all agree with
    the float64 reference."""
    import csv

    bench = _load_bench()
    assert bench.main(["--smoke", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "ntk_bench.csv") as f:
        rows = list(csv.DictReader(f))
    methods = {r["method"] for r in rows}
    assert {"conelib:auto", "conelib:structured", "conelib:jacobian", "conelib:ntvp", "torch:tutorial", "torch:naive"} <= methods
    assert {(r["model"], r["kind"]) for r in rows} == {(m, k) for m in ("lenet_300_100", "lenet5") for k in ("full", "trace")}
    for r in rows:
        assert r["status"] == "ok", r
        # float32 against float64; long float32 sums in the Jacobian contractions cost ~1e-4
        assert float(r["rel_diff_f64"]) < 1e-3, r
        if r["method"].startswith("conelib:") and r["method"] != "conelib:jacobian":
            assert float(r["rel_diff_f64"]) < 1e-5, r
    assert (tmp_path / "ntk_bench.md").read_text().count("| lenet5 |") >= 2
    # --chart: SVG from the CSV, and the book page's table and chart replaced between the markers
    page = tmp_path / "page.md"
    page.write_text("# t\n<!-- ntk_bench:table -->\nSTALE_TABLE\n<!-- /ntk_bench -->\nmid\n"
                    "<!-- ntk_bench:chart -->\n<!-- /ntk_bench -->\nend\n")
    svg = tmp_path / "speed.svg"
    assert bench.main(["--chart", "--out", str(tmp_path), "--svg", str(svg), "--page", str(page)]) == 0
    assert svg.read_text().lstrip().startswith("<svg")
    text = page.read_text()
    assert "STALE_TABLE" not in text and "mid" in text and text.rstrip().endswith("end")
    assert text.count("| lenet5 |") >= 2 and "<svg" in text


def test_memory_benchmark_bound_keeps_kernel(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """benchmarks/ntk_memory.py: a 1 KiB bound (one example per chunk) gives the kernel of a 1 GiB
    bound to float32 round-off, and the tables are written."""
    import csv
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "ntk_memory.py"
    subprocess.run([sys.executable, str(script), "--model", "lenet5", "--n", "16", "--kind", "full",
                    "--limits", "1K", "1G", "--repeats", "1", "--out", str(tmp_path)], check=True)
    with open(tmp_path / "ntk_memory_lenet5_full_n16.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["memory_limit_mb"]) for r in rows] == [1024.0, 1 / 1024]
    assert float(rows[0]["rel_diff"]) == 0.0 and float(rows[1]["rel_diff"]) < 1e-5
    assert (tmp_path / "ntk_memory_lenet5_full_n16.md").read_text().count("MiB |") == 2
