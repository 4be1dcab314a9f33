"""Tests for conelib.models: the registry, the architectures, the init rule, torch.func use.

Every expected value comes from an independent oracle: a parameter count written out by hand
from the architecture's definition, a brute-force loop in float64, the closed-form Kaiming
standard deviation, or an input padded by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from conelib.models import MODELS, NORMS, ChannelLayerNorm, build, init_open_lth

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]
ALLOWED = {
    "lenet5": ("none",),
    "lenet_300_100": ("none",),
    "resnet20": ("batchnorm", "layernorm", "none"),
    "vgg16": ("batchnorm", "layernorm", "none"),
}
MODEL_NORMS = [(name, norm) for name in MODELS for norm in ALLOWED[name]]


def _randomise_running_stats(model: nn.Module, generator: torch.Generator) -> None:
    """Give BatchNorm layers non-trivial running statistics so eval mode is not an identity."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize(("name", "norm"), MODEL_NORMS)
def test_output_shape_and_finite(name: str, norm: str, shape: tuple[int, int, int]) -> None:
    model = build(name, input_shape=shape, num_classes=7, norm=norm, seed=0)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    for mode in (model.train, model.eval):
        mode()
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, 7)
        assert torch.isfinite(y).all()


def test_registry_constants() -> None:
    assert MODELS == ("lenet5", "lenet_300_100", "resnet20", "vgg16")
    assert NORMS == ("batchnorm", "layernorm", "none")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("lenet5", "none"), ("lenet_300_100", "none"), ("resnet20", "batchnorm"), ("vgg16", "batchnorm")],
)
def test_spec_default_norm_and_rebuild(name: str, expected: str) -> None:
    model = build(name, input_shape=(1, 8, 8), num_classes=3, seed=5)
    spec = model.conelib_spec
    assert spec == {
        "name": name, "input_shape": (1, 8, 8), "num_classes": 3, "width": 1, "norm": expected, "seed": 5,
    }
    again = build(**spec)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


# --------------------------------------------------------------------------- parameter counts (closed forms)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _conv(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


@pytest.mark.parametrize("width", [1, 2])
def test_param_count_lenet_300_100(width: int) -> None:
    expected = _linear(784, 300 * width) + _linear(300 * width, 100 * width) + _linear(100 * width, 10)
    assert _n_params(build("lenet_300_100", input_shape=(1, 28, 28), width=width)) == expected
    if width == 1:
        assert expected == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def test_param_count_lenet5_mnist() -> None:
    # 28 -(conv5 pad2)-> 28 -(pool)-> 14 -(conv5)-> 10 -(pool)-> 5: 16*5*5 = 400 features.
    expected = (
        _conv(1, 6, 5, True) + _conv(6, 16, 5, True)
        + _linear(16 * 5 * 5, 120) + _linear(120, 84) + _linear(84, 10)
    )
    assert expected == 61706
    assert _n_params(build("lenet5", input_shape=(1, 28, 28))) == expected


def test_param_count_lenet5_digits_padded_to_12() -> None:
    # 8 padded to 12 -> 12 -> 6 -> 2 -> 1: 16 features.
    expected = _conv(1, 6, 5, True) + _conv(6, 16, 5, True) + _linear(16, 120) + _linear(120, 84) + _linear(84, 10)
    assert _n_params(build("lenet5", input_shape=(1, 8, 8))) == expected


def _resnet20_count(c_in: int, width: int, norm: str, classes: int) -> int:
    """He et al. 2016 CIFAR ResNet-20 with projection shortcuts, counted layer by layer."""
    bias = norm == "none"
    norm_params = 0 if norm == "none" else 2  # per channel: BN / LN weight and bias

    def conv_norm(a: int, b: int, k: int) -> int:
        return _conv(a, b, k, bias) + norm_params * b

    total = conv_norm(c_in, 16 * width, 3)
    current = 16 * width
    for channels in (16 * width, 32 * width, 64 * width):
        for _ in range(3):
            total += conv_norm(current, channels, 3) + conv_norm(channels, channels, 3)
            if current != channels:
                total += conv_norm(current, channels, 1)
            current = channels
    return total + _linear(64 * width, classes)


@pytest.mark.parametrize("width", [1, 2])
@pytest.mark.parametrize("norm", ["batchnorm", "layernorm", "none"])
def test_param_count_resnet20(norm: str, width: int) -> None:
    model = build("resnet20", input_shape=(3, 32, 32), width=width, norm=norm)
    assert _n_params(model) == _resnet20_count(3, width, norm, 10)


def test_resnet20_is_the_0_27m_network() -> None:
    count = _n_params(build("resnet20", input_shape=(3, 32, 32)))
    assert abs(count - 0.27e6) < 0.005e6  # He et al. 2016, Table 6: 0.27M


def test_param_count_vgg16_cifar() -> None:
    plan = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    expected, c = 0, 3
    for f in plan:
        expected += _conv(c, f, 3, True) + 2 * f
        c = f
    expected += _linear(512, 10)
    assert _n_params(build("vgg16", input_shape=(3, 32, 32))) == expected


# --------------------------------------------------------------------------- seeds and RNG


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_parameters_different_seed_different(name: str) -> None:
    a = build(name, input_shape=(1, 8, 8), seed=11)
    b = build(name, input_shape=(1, 8, 8), seed=11)
    c = build(name, input_shape=(1, 8, 8), seed=12)
    for (_, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters(), strict=True):
        assert torch.equal(pa, pb)
    wa = torch.cat([p.flatten() for n, p in a.named_parameters() if n.endswith("weight")])
    wc = torch.cat([p.flatten() for n, p in c.named_parameters() if n.endswith("weight")])
    assert not torch.equal(wa, wc)


def test_seeded_build_leaves_global_rng_untouched() -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    build("resnet20", input_shape=(3, 32, 32), seed=0)
    assert torch.equal(torch.get_rng_state(), before)


def test_unseeded_build_uses_global_rng() -> None:
    torch.manual_seed(77)
    a = build("lenet5", input_shape=(1, 28, 28))
    after = torch.get_rng_state()
    torch.manual_seed(77)
    b = build("lenet5", input_shape=(1, 28, 28))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    torch.manual_seed(77)
    assert not torch.equal(after, torch.get_rng_state())


# --------------------------------------------------------------------------- initialisation statistics


def test_kaiming_normal_on_wide_linear_layer() -> None:
    model = build("lenet_300_100", input_shape=(1, 28, 28), seed=3)
    w = model.fc1.weight.detach().double().flatten()
    sigma = math.sqrt(2.0 / 784)  # He et al. 2015: N(0, 2 / fan_in), fan_in = 28*28
    assert abs(w.std().item() / sigma - 1) < 0.02
    assert abs(w.mean().item()) < 4 * sigma / math.sqrt(w.numel())
    assert stats.kstest((w / sigma).numpy(), "norm").pvalue > 1e-3


def test_kaiming_normal_on_wide_conv_layer_and_zero_biases() -> None:
    model = build("vgg16", input_shape=(3, 32, 32), seed=4)
    conv = model.layers[-1].conv  # 512 -> 512, 3x3
    w = conv.weight.detach().double()
    sigma = math.sqrt(2.0 / (512 * 3 * 3))
    assert abs(w.std().item() / sigma - 1) < 0.01
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0


def test_batchnorm_init_uniform_and_reset_stats() -> None:
    model = build("vgg16", input_shape=(3, 32, 32), norm="batchnorm", seed=5)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    gamma = torch.cat([m.weight.detach().double() for m in bns])
    assert gamma.numel() == 2 * (64 + 128) + 3 * 256 + 6 * 512
    assert gamma.min() >= 0 and gamma.max() <= 1
    # U(0, 1): mean 1/2, variance 1/12; 4224 draws.
    assert abs(gamma.mean().item() - 0.5) < 0.03
    assert abs(gamma.var().item() - 1 / 12) < 0.01
    for m in bns:
        assert torch.count_nonzero(m.bias) == 0
        assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
        assert torch.equal(m.running_var, torch.ones_like(m.running_var))


def test_layernorm_init_ones_and_zeros() -> None:
    model = build("resnet20", input_shape=(3, 32, 32), norm="layernorm", seed=6)
    lns = [m for m in model.modules() if isinstance(m, ChannelLayerNorm)]
    assert len(lns) == 1 + 9 * 2 + 2
    for m in lns:
        assert torch.equal(m.weight, torch.ones_like(m.weight))
        assert torch.equal(m.bias, torch.zeros_like(m.bias))


def test_init_rejects_unknown_parameterised_layer() -> None:
    with pytest.raises(ValueError, match=r"Embedding.*Linear"):
        init_open_lth(nn.Sequential(nn.Linear(2, 2), nn.Embedding(4, 2)))


# --------------------------------------------------------------------------- ChannelLayerNorm


def test_channel_layernorm_matches_brute_force_loop() -> None:
    g = torch.Generator().manual_seed(0)
    n, c, h, w = 2, 5, 3, 4
    layer = ChannelLayerNorm(c).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        layer.bias.copy_(torch.randn(c, generator=g, dtype=torch.float64))
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64) * 3 + 1
    expected = torch.empty_like(x)
    for i in range(n):
        for r in range(h):
            for s in range(w):
                v = [x[i, k, r, s].item() for k in range(c)]
                mu = sum(v) / c
                var = sum((vk - mu) ** 2 for vk in v) / c
                for k in range(c):
                    norm_k = (v[k] - mu) / math.sqrt(var + layer.eps)
                    expected[i, k, r, s] = layer.weight[k].item() * norm_k + layer.bias[k].item()
    with torch.no_grad():
        got = layer(x)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer(x[0]), expected[0], rtol=1e-12, atol=1e-12)


def test_channel_layernorm_rejects_bad_channels() -> None:
    with pytest.raises(ValueError, match="num_channels"):
        ChannelLayerNorm(0)


# --------------------------------------------------------------------------- torch.func compatibility


@pytest.mark.parametrize(("name", "norm"), MODEL_NORMS)
def test_vmap_functional_call_reproduces_batched_forward(name: str, norm: str) -> None:
    g = torch.Generator().manual_seed(2)
    model = build(name, input_shape=(1, 28, 28), norm=norm, seed=1).double().eval()
    with torch.no_grad():
        _randomise_running_stats(model, g)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    x = torch.randn(3, 1, 28, 28, generator=g, dtype=torch.float64)

    def single(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, buffers), (xi.unsqueeze(0),)).squeeze(0)

    with torch.no_grad():
        expected = model(x)
    got = vmap(single, in_dims=(None, 0))(params, x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("name", "norm"), [mn for mn in MODEL_NORMS if mn[0] != "vgg16"])
def test_per_example_jacobian_matches_autograd_loop(name: str, norm: str) -> None:
    """vmap(jacrev) over examples (the eNTK's building block) against a loop of autograd.grad."""
    g = torch.Generator().manual_seed(3)
    model = build(name, input_shape=(1, 8, 8), num_classes=3, norm=norm, seed=2).double().eval()
    with torch.no_grad():
        _randomise_running_stats(model, g)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    x = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)

    def single(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, buffers), (xi.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(single), in_dims=(None, 0))(params, x)
    names = list(params)
    for i in range(x.shape[0]):
        out = model(x[i : i + 1])[0]
        for k in range(out.shape[0]):
            grads = torch.autograd.grad(out[k], [dict(model.named_parameters())[n] for n in names], retain_graph=True)
            for n, grad in zip(names, grads, strict=True):
                torch.testing.assert_close(jac[n][i, k], grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_jvp_matches_autograd_vjp(name: str) -> None:
    """Forward mode: u . (J v) from torch.func.jvp equals <grad_theta (u . f), v> from autograd."""
    g = torch.Generator().manual_seed(4)
    model = build(name, input_shape=(1, 8, 8), num_classes=4, seed=3).double().eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    tangents = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in params.items()}
    x = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    u = torch.randn(2, 4, generator=g, dtype=torch.float64)

    _, jv = jvp(lambda p: functional_call(model, (p, buffers), (x,)), (params,), (tangents,))
    grads = torch.autograd.grad((u * model(x)).sum(), list(model.parameters()))
    expected = sum((gr * tangents[k]).sum() for (k, _), gr in zip(model.named_parameters(), grads, strict=True))
    torch.testing.assert_close((u * jv).sum(), expected, rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------------------- errors


def test_unknown_name_lists_models() -> None:
    with pytest.raises(ValueError, match="name") as err:
        build("resnet18")
    for name in MODELS:
        assert name in str(err.value)


def test_unknown_norm_lists_norms() -> None:
    with pytest.raises(ValueError, match="norm") as err:
        build("resnet20", norm="groupnorm")
    for norm in NORMS:
        assert norm in str(err.value)


@pytest.mark.parametrize("name", ["lenet5", "lenet_300_100"])
@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_lenet_rejects_norm_layers(name: str, norm: str) -> None:
    with pytest.raises(ValueError, match=r"norm=.*allowed.*none"):
        build(name, norm=norm)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"width": 0}, "width"),
        ({"width": -0.5}, "width"),
        ({"width": float("nan")}, "width"),
        ({"width": "2"}, "width"),
        ({"width": True}, "width"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": "10"}, "num_classes"),
        ({"input_shape": (28, 28)}, "input_shape"),
        ({"input_shape": (1, 0, 28)}, "input_shape"),
        ({"input_shape": "1x28x28"}, "input_shape"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_bad_hyperparameters_raise(kwargs: dict, param: str) -> None:
    with pytest.raises(ValueError, match=param):
        build("lenet5", **kwargs)


# --------------------------------------------------------------------------- the padding rule


@pytest.mark.parametrize(
    ("name", "small", "side"),
    [("vgg16", (1, 28, 28), 32), ("lenet5", (1, 8, 8), 12), ("resnet20", (2, 5, 7), 8)],
)
def test_padding_rule_equals_padding_by_hand(name: str, small: tuple[int, int, int], side: int) -> None:
    c, h, w = small
    padded = build(name, input_shape=small, seed=9).eval()
    reference = build(name, input_shape=(c, side, side), seed=9).eval()

    assert isinstance(padded.pad, nn.ZeroPad2d)
    assert isinstance(reference.pad, nn.Identity)
    assert list(padded.pad.parameters()) == []
    assert padded.pad(torch.zeros(1, c, h, w)).shape == (1, c, side, side)
    for pa, pr in zip(padded.parameters(), reference.parameters(), strict=True):
        assert torch.equal(pa, pr)

    x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    by_hand = torch.zeros(2, c, side, side)
    top, left = (side - h) // 2, (side - w) // 2  # the extra pixel of an odd total goes after
    by_hand[:, :, top : top + h, left : left + w] = x
    with torch.no_grad():
        torch.testing.assert_close(padded(x), reference(by_hand), rtol=0, atol=0)


def test_no_padding_when_large_enough() -> None:
    assert isinstance(build("vgg16", input_shape=(3, 40, 32)).pad, nn.Identity)
    assert not any(isinstance(m, nn.ZeroPad2d) for m in build("lenet_300_100", input_shape=(1, 8, 8)).modules())


# --------------------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("name", "norm"), MODEL_NORMS)
def test_cuda_matches_cpu(name: str, norm: str) -> None:
    cpu = build(name, input_shape=(3, 32, 32), norm=norm, seed=8).double().eval()
    gpu = build(name, input_shape=(3, 32, 32), norm=norm, seed=8).double().eval().to("cuda")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.to("cuda")).cpu(), cpu(x), rtol=1e-9, atol=1e-10)
    # init_open_lth on a module already on the GPU draws the same numbers as on the CPU.
    layer_cpu = init_open_lth(nn.Linear(50, 40), torch.Generator().manual_seed(1))
    layer_gpu = init_open_lth(nn.Linear(50, 40).to("cuda"), torch.Generator().manual_seed(1))
    torch.testing.assert_close(layer_gpu.weight.cpu(), layer_cpu.weight, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5", "resnet20", "vgg16"])
def test_fractional_width_scales_every_layer(name: str) -> None:
    """width=0.5 halves (rounding) every hidden size; the closed form: each conv/linear layer's
    output size is round(base * width), checked against the width-1 model's layer sizes."""
    shape = (1, 28, 28) if name.startswith("lenet") else (3, 32, 32)
    full = build(name, input_shape=shape, width=1, seed=0)
    half = build(name, input_shape=shape, width=0.5, seed=0)
    layers = (torch.nn.Conv2d, torch.nn.Linear)
    outs_full = [m.weight.shape[0] for m in full.modules() if isinstance(m, layers)]
    outs_half = [m.weight.shape[0] for m in half.modules() if isinstance(m, layers)]
    expected = [max(1, round(o * 0.5)) for o in outs_full[:-1]] + [outs_full[-1]]  # the head keeps num_classes
    assert outs_half == expected
    assert half(torch.zeros(2, *shape)).shape == (2, 10)
