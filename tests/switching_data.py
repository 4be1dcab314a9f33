"""A switching result built by hand, for the tests of the statistics and of the report (a test
helper, not a test module)."""

from __future__ import annotations

import numpy as np
import xarray as xr


def constructed(n_images: int = 40, *, small_lr: bool = False) -> xr.Dataset:
    """A switching result by hand: T = 40, steps to 60, switch steps 0, 20, 40, two seeds; the
    standard run's train loss falls as 1/(1 + step/10); continuation t ends at T with train loss
    2.0 / (1 + t/10) / 5 and reaches the standard's final loss at step 50 (t = 20) or never (t = 0).
    With ``small_lr``, a small-lr arm that gets every image right that the linearized one does, and
    more at t = 20."""
    steps = np.arange(0, 61, 10)
    switch, seeds = [0, 20, 40], [0, 1]
    T = 40
    std_loss = np.where(steps <= T, 1 / (1 + steps / 10), np.nan)
    rng = np.random.default_rng(0)
    std_correct = (rng.random((2, len(steps), n_images)) < 0.5 + steps[None, :, None] / 200).astype(np.int8)
    std_correct[:, steps > T] = -1
    lin_loss = np.full((3, 2, len(steps)), np.nan)
    lin_loss[0, :, :5] = [[2.0, 1.0, 0.6, 0.5, 0.45]] * 2
    lin_loss[1, :, 2:6] = [[std_loss[2], 0.3, 0.25, 0.19]] * 2  # reaches 0.2 (the standard's at T) at 50
    lin_loss[2, :, 4] = std_loss[4]
    final_correct = (rng.random((3, 2, n_images)) < 0.7).astype(np.int8)
    final_correct[2] = std_correct[:, 4]
    matched = np.full((3, 2, n_images), -1, dtype=np.int8)
    matched[1] = (rng.random((2, n_images)) < 0.8)
    matched[2] = std_correct[:, 4]
    acc = final_correct.mean(-1)
    d2 = ("switch_step", "seed")
    extra = {}
    if small_lr:
        small = final_correct.copy()
        small[1, :, : n_images // 2] = 1
        extra = {"small_lr_test_correct": (d2 + ("image",), small),
                 "small_lr_final_test_acc": (d2, small.mean(-1)), "small_lr_final_test_loss": (d2, 1 - small.mean(-1)),
                 "small_lr_final_train_loss": (d2, lin_loss[:, :, 4] * 2)}
    return xr.Dataset({**extra,
        "final_test_acc": (d2, acc), "final_test_loss": (d2, 1 - acc),
        "final_train_loss": (d2, lin_loss[:, :, 4]),
        "final_test_correct": (d2 + ("image",), final_correct),
        "matched_test_correct": (d2 + ("image",), matched),
        "matched_test_acc": (d2, np.where(matched[..., 0] >= 0, matched.mean(-1), np.nan)),
        "matched_test_loss": (d2, np.where(matched[..., 0] >= 0, 0.1, np.nan)),
        "matched_train_loss": (d2, np.array([[np.nan] * 2, [0.19] * 2, [0.2] * 2])),
        "matched_step": (d2, np.array([[np.nan] * 2, [50.0] * 2, [40.0] * 2])),
        "train_loss_curve": (d2 + ("step",), lin_loss),
        "standard_train_loss": (("seed", "step"), np.tile(std_loss, (2, 1))),
        "standard_test_acc": (("seed", "step"), np.where(steps <= T, std_correct.mean(-1), np.nan)),
        "standard_test_loss": (("seed", "step"), np.tile(np.where(steps <= T, 0.5 - steps / 200, np.nan), (2, 1))),
        "standard_test_correct": (("seed", "step", "image"), std_correct),
        "standard_final_test_acc": (("seed",), std_correct[:, 4].mean(-1)),
        "standard_final_test_loss": (("seed",), np.full(2, 0.3)),
        "standard_final_train_loss": (("seed",), np.full(2, std_loss[4])),
    }, coords={"switch_step": switch, "seed": seeds, "step": steps, "image": np.arange(n_images)})
