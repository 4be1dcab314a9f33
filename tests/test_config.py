"""`conelib.config`: parameters declared once, read the same way everywhere, with identity and full
configuration; oracles are the dataclass fields themselves and YAML 1.2's reading of numbers."""

from __future__ import annotations

import json

import pytest

from conelib.config import ParameterError, parse_text, unknown_names_error
from conelib.experiments import KernelDynamicsConfig, SwitchingConfig
from conelib.train import TrainConfig


@pytest.mark.parametrize("text, want", [
    ("1e-3", 0.001), ("10", 10), ("[1, 2]", [1, 2]), ("true", True), ("null", None), ("lenet5", "lenet5"),
    ("{a: 1}", {"a": 1}), ("[unclosed", "[unclosed"),
])
def test_typed_text_is_read_as_yaml_1_2(text, want):
    assert parse_text(text) == want


def test_identity_leaves_out_defaults_and_runtime_fields_full_keeps_every_non_runtime_one():
    cfg = KernelDynamicsConfig(model="lenet_300_100", lr=0.05, device="cpu", steps=2000)
    params = KernelDynamicsConfig.parameters()
    assert cfg.identity() == {"model": "lenet_300_100", "lr": 0.05, "steps": 2000}
    full = cfg.full()
    assert set(full) == {k for k, p in params.items() if not p.runtime}
    assert full["lr"] == 0.05 and full["momentum"] == params["momentum"].default and "device" not in full
    assert cfg.runtime()["device"] == "cpu"


def test_flat_names_reach_the_training_section():
    cfg = KernelDynamicsConfig(lr=0.3, seed=4)
    assert isinstance(cfg.train, TrainConfig) and cfg.train.lr == 0.3 and cfg.lr == 0.3 and cfg.seed == 4
    assert cfg.replace(lr=0.1).lr == 0.1 and cfg.replace(lr=0.1).seed == 4
    with pytest.raises(AttributeError):
        _ = cfg.no_such_parameter


def test_from_result_reads_the_full_configuration_first_then_the_identity():
    cfg = KernelDynamicsConfig(model="lenet_300_100", seed=2, probe_size=64, steps=400, snapshot_every=20,
                               dts=(20,), taus=(200,))
    attrs = {"config_json": json.dumps(cfg.identity()), "config_full_json": json.dumps(cfg.full())}
    assert KernelDynamicsConfig.from_result(attrs) == cfg
    only_identity = {"config_json": json.dumps(cfg.identity())}
    assert KernelDynamicsConfig.from_result(only_identity) == cfg  # defaults of today fill the rest
    # a full configuration that says something the identity does not: the full one wins
    other = dict(attrs, config_full_json=json.dumps({**cfg.full(), "lr": 0.05}))
    assert KernelDynamicsConfig.from_result(other).lr == 0.05
    with pytest.raises(ValueError, match="records no configuration"):
        KernelDynamicsConfig.from_result({})


@pytest.mark.parametrize("kwargs, name", [
    ({"lr": -1.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"batch_size": 0}, "batch_size"),
    ({"model": "lenet7"}, "model"), ({"momentum": 1.0}, "momentum"), ({"snapshot_every": 0}, "snapshot_every"),
])
def test_bad_values_raise_parameter_errors_naming_the_parameter(kwargs, name):
    with pytest.raises(ParameterError) as err:
        KernelDynamicsConfig(**kwargs)
    assert err.value.name == name and name in str(err.value)


def test_unknown_names_suggest_the_close_ones():
    err = unknown_names_error(["learning_rate", "sed"], KernelDynamicsConfig.parameters(), "notebook 'x'")
    text = str(err)
    assert "learning_rate" in text and "sed" in text and "seed" in text


def test_every_parameter_is_declared_once_with_help():
    for cls in (KernelDynamicsConfig, SwitchingConfig):
        params = cls.parameters()
        assert len(params) == len(set(params))
        for name, p in params.items():
            assert p.help, f"{cls.__name__}.{name} has no help text"


def test_values_equal_compares_numbers_as_numbers_and_lists_element_by_element():
    from conelib.config import values_equal

    assert values_equal(0.1, 0.1 + 1e-17) and values_equal(2, 2.0) and values_equal("0.1", 0.1)
    assert not values_equal(0.1, 0.1000001) and not values_equal(0, None) and values_equal(None, None)
    assert values_equal([2000], (2000.0,)) and values_equal(None, []) and values_equal((), [])
    assert not values_equal([2000], [2000, 4000]) and not values_equal([1000], [2000])
    assert values_equal("sgd", "sgd") and not values_equal("sgd", "adam")
