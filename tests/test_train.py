"""Tests of conelib.train against independent oracles (torch schedulers, hand-derived SGD
updates in float64, brute-force autograd loops, exact resume)."""

from __future__ import annotations

import dataclasses
import math
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from conelib.train import (
    BatchOrder,
    TrainConfig,
    TrainHistory,
    TrainingDivergedError,
    evaluate,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
    train,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ------------------------------------------------------------------------------- fixtures


def make_data(n_train=48, n_test=20, d=6, classes=3, seed=0, dtype=torch.float32, augment=False):
    g = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(
        x_train=torch.randn(n_train, d, generator=g, dtype=dtype),
        y_train=torch.randint(0, classes, (n_train,), generator=g),
        x_test=torch.randn(n_test, d, generator=g, dtype=dtype),
        y_test=torch.randint(0, classes, (n_test,), generator=g),
        num_classes=classes,
        augment=augment,
    )


def make_mlp(d=6, classes=3, seed=0, dropout=0.0, bn=False):
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(d, 16)]
    if bn:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(16, classes))
    return nn.Sequential(*layers)


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


QUIET = dict(progress=False)


# ------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("milestones,gamma", [((), 0.1), ((3,), 0.5), ((2, 5, 9), 0.1)])
def test_lr_at_matches_multisteplr(milestones, gamma):
    cfg = TrainConfig(steps=12, lr=0.3, milestones=milestones, gamma=gamma)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma)
    for t in range(cfg.steps):
        assert cfg.lr_at(t) == pytest.approx(sched.get_last_lr()[0], rel=1e-12)
        opt.step()
        sched.step()


def test_lr_at_warmup_matches_chained_linearlr_multisteplr():
    # torch's LinearLR needs start_factor > 0: start at 1e-12 (open_lth starts at exactly 0).
    warmup, milestones, gamma, lr = 5, (3, 8), 0.1, 0.2
    cfg = TrainConfig(steps=12, lr=lr, warmup_steps=warmup, milestones=milestones, gamma=gamma)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.ChainedScheduler(
        [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-12, total_iters=warmup),
            torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma),
        ]
    )
    for t in range(cfg.steps):
        assert cfg.lr_at(t) == pytest.approx(sched.get_last_lr()[0], rel=1e-9, abs=1e-12)
        opt.step()
        sched.step()
    assert cfg.lr_at(0) == 0.0  # open_lth: warm-up from exactly 0
    assert cfg.lr_at(warmup + 100) == pytest.approx(lr * gamma**2)


@pytest.mark.parametrize(
    "field,value",
    [
        ("steps", -1),
        ("steps", 2.5),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("momentum", 1.0),
        ("momentum", -0.1),
        ("weight_decay", -1e-4),
        ("warmup_steps", -2),
        ("milestones", (5, 3)),
        ("milestones", (0, 3)),
        ("gamma", 0.0),
        ("augment", "maybe"),  # yes/no are booleans (one reading at every entry point)
        ("seed", -1),
    ],
)
def test_config_validation_names_field(field, value):
    kwargs = {"steps": 10, field: value}
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs)


def test_config_nesterov_needs_momentum_and_lr_at_rejects_negative_step():
    with pytest.raises(ValueError, match="nesterov"):
        TrainConfig(steps=1, momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="step"):
        TrainConfig(steps=1).lr_at(-1)


def test_config_dict_round_trip_is_json():
    import json

    cfg = TrainConfig(steps=7, milestones=[2, 4], augment=True, seed=np.int64(3))
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["milestones"] == [2, 4] and type(d["seed"]) is int
    assert TrainConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="did you mean 'lr'"):
        TrainConfig.from_dict({**d, "lrr": 0.1})


# ------------------------------------------------------------------------------- BatchOrder


def test_batch_order_epochs_are_permutations_when_batch_divides_n():
    n, b = 12, 4
    order = BatchOrder(n, b, seed=3)
    for epoch in range(4):
        steps = range(epoch * n // b, (epoch + 1) * n // b)
        seen = torch.cat([order.indices(s) for s in steps])
        assert sorted(seen.tolist()) == list(range(n))
    assert not torch.equal(order.permutation(0), order.permutation(1))


@pytest.mark.parametrize("n,b", [(10, 4), (3, 7), (5, 5)])
def test_batch_order_wraps_and_stream_is_concatenated_permutations(n, b):
    order = BatchOrder(n, b, seed=1)
    n_epochs = 3
    n_steps = n_epochs * n // b
    stream = torch.cat([order.indices(s) for s in range(n_steps)])
    assert all(len(order.indices(s)) == b for s in range(n_steps))
    for e in range(len(stream) // n):
        assert sorted(stream[e * n : (e + 1) * n].tolist()) == list(range(n))
    expected = torch.cat([order.permutation(e) for e in range(n_epochs + 2)])[: len(stream)]
    assert torch.equal(stream, expected)


def test_batch_order_is_pure_function_of_seed_and_step():
    a, b = BatchOrder(50, 8, seed=7), BatchOrder(50, 8, seed=7)
    steps = list(range(40))
    forward = {s: a.indices(s) for s in steps}
    rng = np.random.default_rng(0)
    for s in rng.permutation(steps):  # another call order on a fresh instance
        assert torch.equal(b.indices(int(s)), forward[int(s)])
    other = BatchOrder(50, 8, seed=8)
    assert not all(torch.equal(other.indices(s), forward[s]) for s in steps)
    g1, g2, g3 = a.generator(5), b.generator(5), a.generator(6)
    r1, r2, r3 = (torch.rand(4, generator=g) for g in (g1, g2, g3))
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)
    with pytest.raises(ValueError, match="batch_size"):
        BatchOrder(5, 0, 0)


# ------------------------------------------------------------------------------- SGD maths


def test_one_sgd_step_matches_hand_update_float64():
    # Softmax regression: grad_W = (softmax(XW^T + b) - Y)^T X / N, grad_b = mean(softmax - Y).
    data = make_data(n_train=10, d=4, classes=3, dtype=torch.float64)
    model = nn.Linear(4, 3).double()
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    lr, wd = 0.37, 0.01
    cfg = TrainConfig(steps=1, batch_size=10, lr=lr, momentum=0.0, weight_decay=wd)
    train(model, data, cfg, **QUIET)
    x, y = data.x_train, data.y_train
    p = torch.softmax(x @ w0.T + b0, dim=1)
    r = p - torch.nn.functional.one_hot(y, 3).double()
    gw, gb = r.T @ x / len(x), r.mean(0)
    torch.testing.assert_close(
        model.weight.detach(), w0 - lr * (gw + wd * w0), rtol=1e-12, atol=1e-14
    )
    torch.testing.assert_close(
        model.bias.detach(), b0 - lr * (gb + wd * b0), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("nesterov", [False, True])
def test_training_matches_brute_force_momentum_loop_float64(nesterov):
    data = make_data(n_train=22, d=5, classes=3, dtype=torch.float64, seed=2)
    cfg = TrainConfig(
        steps=9,
        batch_size=8,
        lr=0.2,
        momentum=0.9,
        weight_decay=1e-3,
        nesterov=nesterov,
        warmup_steps=3,
        milestones=(6,),
        gamma=0.5,
        seed=5,
    )
    model = make_mlp(d=5, seed=1).double()
    ref = make_mlp(d=5, seed=1).double()
    train(model, data, cfg, **QUIET)

    params = [p.detach().clone().requires_grad_(True) for p in ref.parameters()]
    bufs = [None] * len(params)
    order = BatchOrder(len(data.x_train), cfg.batch_size, cfg.seed)
    for t in range(cfg.steps):
        idx = order.indices(t)
        out = torch.func.functional_call(
            ref, dict(zip([n for n, _ in ref.named_parameters()], params)), data.x_train[idx]
        )
        loss = torch.nn.functional.cross_entropy(out, data.y_train[idx])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads)):
                d = g + cfg.weight_decay * p
                bufs[i] = d.clone() if bufs[i] is None else cfg.momentum * bufs[i] + d
                step = d + cfg.momentum * bufs[i] if nesterov else bufs[i]
                p -= cfg.lr_at(t) * step
    torch.testing.assert_close(
        flat_params(model),
        torch.cat([p.detach().reshape(-1) for p in params]),
        rtol=1e-11,
        atol=1e-13,
    )


def test_only_trainable_parameters_are_updated():
    data = make_data()
    model = make_mlp()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    train(model, data, TrainConfig(steps=3, batch_size=8), **QUIET)
    assert torch.equal(model[0].weight, frozen)
    assert not torch.equal(model[2].weight, make_mlp()[2].weight)


# ------------------------------------------------------------------------------- determinism


def test_same_seed_same_run_different_seed_different_run():
    data = make_data()
    cfg = TrainConfig(steps=10, batch_size=8, seed=11)
    runs = []
    for seed in (11, 11, 12):
        model = make_mlp(dropout=0.3)
        h = train(model, data, dataclasses.replace(cfg, seed=seed), snapshot_steps=2, **QUIET)
        runs.append((h, flat_params(model)))
    (h1, p1), (h2, p2), (h3, p3) = runs
    assert h1.train_loss == h2.train_loss and h1.test_acc == h2.test_acc
    assert torch.equal(p1, p2)
    assert not torch.equal(p1, p3)


def test_training_leaves_global_rng_untouched():
    data, model = make_data(), make_mlp(dropout=0.5)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(model, data, TrainConfig(steps=3, batch_size=8), **QUIET)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("first_leg_steps", ["T", "t"])
def test_resume_from_checkpoint_is_bit_identical(tmp_path, first_leg_steps):
    data = make_data(n_train=40)
    T, t = 14, 6
    cfg = TrainConfig(
        steps=T,
        batch_size=12,
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-3,
        warmup_steps=3,
        milestones=(5, 10),
        seed=9,
    )
    full = make_mlp(dropout=0.2, bn=True)
    train(full, data, cfg, **QUIET)

    first = make_mlp(dropout=0.2, bn=True)
    leg_cfg = cfg if first_leg_steps == "T" else dataclasses.replace(cfg, steps=t)
    h = train(first, data, leg_cfg, checkpoint_steps=[t], checkpoint_dir=tmp_path, **QUIET)
    assert h.checkpoints == {t: tmp_path / f"step_{t:07d}.pt"}

    resumed = make_mlp(seed=99, dropout=0.2, bn=True)  # different init: the load must restore
    ckpt = load_checkpoint(h.checkpoints[t], resumed)
    assert ckpt["step"] == t and TrainConfig.from_dict(ckpt["config"]) == leg_cfg
    train(resumed, data, cfg, start_step=ckpt["step"], optimizer_state=ckpt["optimizer"], **QUIET)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_stop_when_ends_the_run_at_a_snapshot_in_the_state_of_that_step(tmp_path):
    """Oracle: a run of exactly that many steps. stop_when sees each snapshot's metrics; when it
    returns true the run ends there, with the model and the history of the shorter run."""
    data = make_data(n_train=40)
    cfg = TrainConfig(steps=30, batch_size=8, lr=0.05, momentum=0.9, seed=4)
    seen = []

    def stop_when(step, model, history):
        seen.append((step, history.steps[-1], isinstance(model, nn.Module)))
        return step == 12

    stopped = make_mlp()
    h = train(stopped, data, cfg, snapshot_steps=4, stop_when=stop_when, **QUIET)
    short = make_mlp()
    h_short = train(short, data, dataclasses.replace(cfg, steps=12), snapshot_steps=4, **QUIET)
    assert h.steps == h_short.steps == [0, 4, 8, 12] and h.train_loss == h_short.train_loss
    assert seen == [(s, s, True) for s in (0, 4, 8, 12)]
    assert torch.equal(flat_params(stopped), flat_params(short))
    with pytest.raises(ValueError, match="stop_when"):
        train(make_mlp(), data, cfg, stop_when=3, **QUIET)


def test_checkpoint_restores_parameters_and_momentum_buffers(tmp_path):
    data = make_data()
    cfg = TrainConfig(steps=3, batch_size=8, momentum=0.9)
    model = make_mlp()
    opt = make_optimizer(model.parameters(), cfg)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(data.x_train), data.y_train).backward()
        opt.step()
    path = save_checkpoint(tmp_path / "sub" / "c.pt", model, opt, 3, cfg)
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pt"]  # no temp file left

    fresh = make_mlp(seed=5)
    fresh_opt = make_optimizer(fresh.parameters(), cfg)
    ckpt = load_checkpoint(path, fresh, fresh_opt)
    assert ckpt["step"] == 3
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
        buf_p = opt.state[p]["momentum_buffer"]
        assert buf_p is not None and torch.equal(buf_p, fresh_opt.state[q]["momentum_buffer"])
    with pytest.raises(FileNotFoundError, match="missing"):
        load_checkpoint(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------- divergence


def test_divergent_lr_raises():
    data = make_data()
    with pytest.raises(TrainingDivergedError, match="smaller lr") as info:
        train(make_mlp(), data, TrainConfig(steps=200, batch_size=8, lr=1e6, momentum=0.0), **QUIET)
    assert isinstance(info.value, FloatingPointError)
    assert info.value.lr == 1e6 and not math.isfinite(info.value.loss)
    assert f"step {info.value.step}" in str(info.value)


def test_injected_nan_raises_at_that_step_before_the_update():
    data = make_data(n_train=16)
    data.x_train[:] = float("nan")
    model = make_mlp()
    before = flat_params(model)
    with pytest.raises(TrainingDivergedError) as info:
        train(model, data, TrainConfig(steps=5, batch_size=4, lr=0.01), **QUIET)
    assert info.value.step == 0 and "lr = 0.01" in str(info.value)
    assert torch.equal(flat_params(model), before)  # CPU: checked before the update


# ------------------------------------------------------------------------------- snapshots


def test_snapshot_schedule_and_callback_extras():
    data = make_data()
    cfg = TrainConfig(steps=10, batch_size=8)
    model = make_mlp()
    w0 = model[0].weight.detach().clone()
    seen = []

    def on_snapshot(step, m):
        seen.append((step, m.training, torch.is_grad_enabled()))
        return {"w_norm": m[0].weight.norm(), "vec": torch.arange(3) * step}

    h = train(model, data, cfg, snapshot_steps=4, on_snapshot=on_snapshot, **QUIET)
    assert h.steps == [0, 4, 8, 10]
    assert [s for s, _, _ in seen] == [0, 4, 8, 10]
    assert all(not training and grad for _, training, grad in seen)  # eval mode, autograd on
    assert model.training
    assert h.extra["w_norm"][0] == pytest.approx(w0.norm().item())
    assert h.extra["w_norm"][-1] == pytest.approx(model[0].weight.norm().item())
    np.testing.assert_array_equal(h.extra["vec"][2], np.arange(3) * 8)

    h2 = train(make_mlp(), data, cfg, snapshot_steps=[0, 3, 7], **QUIET)
    assert h2.steps == [0, 3, 7] and h2.extra == {}
    assert train(make_mlp(), data, cfg, **QUIET).steps == [10]
    with pytest.raises(ValueError, match="snapshot_steps"):
        train(make_mlp(), data, cfg, snapshot_steps=[11], **QUIET)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train(make_mlp(), data, cfg, checkpoint_steps=[2], **QUIET)


def test_snapshot_metrics_equal_independent_evaluation():
    data = make_data()
    cfg = TrainConfig(steps=6, batch_size=8)
    model = make_mlp()
    h = train(model, data, cfg, snapshot_steps=[6], eval_train_max=None, **QUIET)
    assert h.test_loss[0] == pytest.approx(evaluate(model, data.x_test, data.y_test)[0], rel=1e-6)
    assert h.train_acc[0] == evaluate(model, data.x_train, data.y_train)[1]


def test_eval_train_subset_is_stratified_and_bounded():
    data = make_data(n_train=60)
    data.y_train = torch.arange(60) % 3
    model = make_mlp()
    sizes = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            if not self.training:
                sizes.append(len(x))
            return self.inner(x)

    train(
        Counting(),
        data,
        TrainConfig(steps=0),
        snapshot_steps=[0],
        eval_train_max=12,
        eval_batch_size=1000,
        **QUIET,
    )
    assert sizes == [12, len(data.x_test)]


def test_to_dataset_dims_attrs_and_missing_extras():
    h = TrainHistory(
        steps=[0, 5],
        train_loss=[2.0, 1.0],
        train_acc=[0.1, 0.5],
        test_loss=[2.1, 1.2],
        test_acc=[0.1, 0.4],
        extra={"s": [1.0, None], "m": [np.eye(2), 2 * np.eye(2)]},
    )
    ds = h.to_dataset()
    assert ds["train_loss"].dims == ("step",) and list(ds["step"].values) == [0, 5]
    assert ds["train_loss"].attrs["units"] == "nats" and ds["test_acc"].attrs["units"] == "1"
    assert all(
        "long_name" in ds[v].attrs for v in ("train_loss", "train_acc", "test_loss", "test_acc")
    )
    assert np.isnan(ds["s"].values[1]) and ds["s"].values[0] == 1.0
    assert ds["m"].dims == ("step", "m_dim_0", "m_dim_1")
    np.testing.assert_array_equal(ds["m"].sel(step=5).values, 2 * np.eye(2))
    bad = TrainHistory(
        steps=[0, 1],
        train_loss=[0, 0],
        train_acc=[0, 0],
        test_loss=[0, 0],
        test_acc=[0, 0],
        extra={"v": [np.zeros(2), np.zeros(3)]},
    )
    with pytest.raises(ValueError, match="'v'"):
        bad.to_dataset()


# ------------------------------------------------------------------------------- evaluate


def test_evaluate_matches_per_example_loop_float64():
    data = make_data(n_test=17, dtype=torch.float64)
    model = make_mlp(dropout=0.5).double()
    model.train()
    loss, acc = evaluate(model, data.x_test, data.y_test, batch_size=5)
    assert model.training  # the mode it found is restored
    losses, hits = [], []
    with torch.no_grad():
        model.eval()
        for x, y in zip(data.x_test, data.y_test):
            logits = model(x[None])[0]
            losses.append(-(logits - torch.logsumexp(logits, 0))[y].item())
            hits.append(int(logits.argmax() == y))
    assert loss == pytest.approx(np.mean(losses), rel=1e-12)
    assert acc == np.mean(hits)


# ------------------------------------------------------------------------------- misc


def test_augmentation_uses_conelib_data_augment_batch(monkeypatch):
    calls = []

    def fake_augment(x, generator=None, *, pad=4, flip=True):
        calls.append(torch.rand(1, generator=generator).item())
        return x

    # the module (``conelib.train`` is also the name of the function the package re-exports)
    monkeypatch.setattr(sys.modules["conelib.train"], "augment_batch_fn", fake_augment)
    cfg = TrainConfig(steps=4, batch_size=8)
    train(make_mlp(), make_data(augment=True), cfg, **QUIET)  # augment=None -> data.augment
    first = list(calls)
    assert len(first) == 4 and len(set(first)) == 4
    calls.clear()
    train(make_mlp(), make_data(augment=True), cfg, **QUIET)
    assert calls == first  # per-step generators are reproducible
    calls.clear()
    train(
        make_mlp(),
        make_data(augment=True),
        TrainConfig(steps=4, batch_size=8, augment=False),
        **QUIET,
    )
    assert calls == []


def test_progress_bar_text_and_desc(capsys):
    train(make_mlp(), make_data(), TrainConfig(steps=3, batch_size=8), desc="my-run", progress=True)
    err = capsys.readouterr().err
    assert "my-run" in err and "loss=" in err
    train(make_mlp(), make_data(), TrainConfig(steps=3, batch_size=8), progress=False)
    assert capsys.readouterr().err == ""


def test_bad_data_and_model_raise():
    with pytest.raises(ValueError, match="x_test"):
        train(
            make_mlp(),
            types.SimpleNamespace(x_train=torch.zeros(2, 6), y_train=torch.zeros(2)),
            TrainConfig(steps=1),
            **QUIET,
        )
    data = make_data()
    data.y_train = data.y_train.float()
    with pytest.raises(ValueError, match="y_train"):
        train(make_mlp(), data, TrainConfig(steps=1), **QUIET)
    with pytest.raises(ValueError, match="parameters"):
        train(nn.ReLU(), make_data(), TrainConfig(steps=1), **QUIET)
    with pytest.raises(ValueError, match="start_step"):
        train(make_mlp(), make_data(), TrainConfig(steps=3), start_step=4, **QUIET)


def test_learns_sklearn_digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y)
    data = types.SimpleNamespace(
        x_train=x[:1400],
        y_train=y[:1400],
        x_test=x[1400:],
        y_test=y[1400:],
        num_classes=10,
        augment=False,
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    h = train(
        model, data, TrainConfig(steps=150, batch_size=64, lr=0.1, momentum=0.9), snapshot_steps=[0, 150], **QUIET
    )
    assert h.test_loss[-1] < 0.5 * h.test_loss[0]
    assert h.test_acc[-1] > 0.85


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_each_device(device):
    data = make_data()
    model = make_mlp(dropout=0.2, bn=True).to(device)
    h = train(
        model,
        data,
        TrainConfig(steps=30, batch_size=8, seed=1),
        snapshot_steps=10,
        on_snapshot=lambda t, m: {"dev": str(next(m.parameters()).device)},
        **QUIET,
    )
    assert h.steps == [0, 10, 20, 30] and all(d.startswith(device) for d in h.extra["dev"])
    assert next(model.parameters()).device.type == device
    with pytest.raises(TrainingDivergedError):
        train(
            make_mlp().to(device),
            data,
            TrainConfig(steps=300, batch_size=8, lr=1e6, momentum=0.0),
            **QUIET,
        )


def test_diverged_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(TrainingDivergedError(7, float("nan"), 0.5)))
    assert isinstance(err, TrainingDivergedError)
    assert (err.step, err.lr) == (7, 0.5) and "step 7" in str(err)


# ------------------------------------------------------------------------------- decay centre


class _Silent(nn.Module):
    """A network whose output is 0 * g(x): every loss gradient is exactly zero, so SGD moves its
    parameters by weight decay alone (a closed form)."""

    def __init__(self, d=6, classes=3):
        super().__init__()
        self.g = nn.Linear(d, classes)

    def forward(self, x):
        return 0.0 * self.g(x)


@pytest.mark.parametrize("steps,lr,wd", [(5, 0.1, 0.01), (40, 0.05, 0.1)])
def test_weight_decay_towards_a_centre_is_geometric(steps, lr, wd):
    """theta_t - c = (1 - lr wd)^t (theta_0 - c): with c = 0 torch's own decay, with c = theta_0 no move."""
    data = make_data(dtype=torch.float64)
    for centre_is_start in (False, True):
        model = _Silent().double()
        theta0 = [p.detach().clone() for p in model.parameters()]
        centre = theta0 if centre_is_start else [torch.zeros_like(p) for p in theta0]
        train(model, data, TrainConfig(steps=steps, batch_size=8, lr=lr, weight_decay=wd), decay_center=centre,
              eval_train_max=None, **QUIET)
        factor = (1 - lr * wd) ** steps
        for p, p0, c in zip(model.parameters(), theta0, centre):
            torch.testing.assert_close(p.detach(), c + factor * (p0 - c), rtol=1e-12, atol=1e-14)


def test_decay_centre_zero_equals_torch_weight_decay_and_one_step_closed_form():
    data = make_data(dtype=torch.float64)
    cfg = TrainConfig(steps=3, batch_size=8, lr=0.1, momentum=0.9, weight_decay=0.05)
    a, b = make_mlp().double(), make_mlp().double()
    train(a, data, cfg, **QUIET)
    train(b, data, cfg, decay_center=[torch.zeros_like(p) for p in b.parameters()], **QUIET)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)
    # one step, centre c: theta_1 = theta_0 - lr (grad L_B(theta_0) + wd (theta_0 - c)), grad by autograd
    model = make_mlp().double()
    theta0 = [p.detach().clone() for p in model.parameters()]
    centre = [p + 0.3 for p in theta0]
    one = TrainConfig(steps=1, batch_size=8, lr=0.1, weight_decay=0.05)
    idx = BatchOrder(len(data.x_train), 8, one.seed).indices(0)
    loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
    grads = torch.autograd.grad(loss, list(model.parameters()))
    train(model, data, one, decay_center=centre, **QUIET)
    for p, p0, g, c in zip(model.parameters(), theta0, grads, centre):
        torch.testing.assert_close(p.detach(), p0 - 0.1 * (g + 0.05 * (p0 - c)), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="decay_center"):
        train(make_mlp(), make_data(), one, decay_center=[torch.zeros(1)], **QUIET)
