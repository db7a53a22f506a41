"""RectificationMonitor against lightning_radam.rectification, through a real Trainer and TensorBoard event files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import BETA2S, Model, assert_matches_math, make_trainer, read_events, scalar_series, two_groups
from lightning.pytorch.plugins.precision import MixedPrecision

from lightning_radam import RAdam
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor
from lightning_radam.rectification import r_t


@pytest.mark.parametrize("threshold", [4.0, 5.0])
def test_rectification_monitor_radam_matches_math(tmp_path, threshold):
    model = Model(two_groups(lambda groups: RAdam(groups, lr=1e-2, threshold=threshold)))
    trainer = make_trainer(tmp_path, [RectificationMonitor()], max_steps=8)
    trainer.fit(model)
    events = read_events(trainer.logger.log_dir)
    for g, beta2 in enumerate(BETA2S):
        assert_matches_math(events, f"group{g}", beta2, threshold, list(range(8)))
    # the monitor reads what RAdam did: rectified from step 5 (threshold 4) or 6 (threshold 5)
    _, rectified = scalar_series(events, "radam/group0/rectified")
    assert rectified.tolist() == [0.0] * (4 if threshold == 4.0 else 5) + [1.0] * (4 if threshold == 4.0 else 3)


@pytest.mark.parametrize(
    ("make", "threshold"),
    [
        (lambda groups: torch.optim.Adam(groups, lr=1e-3), 5.0),
        (lambda groups: torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.1), 4.0),
    ],
    ids=["Adam-threshold5", "AdamW-threshold4"],
)
def test_rectification_monitor_diagnoses_adam(tmp_path, make, threshold):
    trainer = make_trainer(tmp_path, [RectificationMonitor(threshold=threshold)], max_steps=7)
    trainer.fit(Model(two_groups(make)))
    events = read_events(trainer.logger.log_dir)
    for g, beta2 in enumerate(BETA2S):
        assert_matches_math(events, f"group{g}", beta2, threshold, list(range(7)))


@pytest.mark.parametrize("unscale_in_step", [False, True], ids=["lightning-unscales", "optimizer-unscales"])
def test_rectification_monitor_reports_skipped_step(tmp_path, unscale_in_step):
    """A step the GradScaler skips for non-finite gradients advances the Trainer, not the optimizer."""
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    model = Model(
        lambda params: RAdam(params, lr=1e-2, betas=(0.9, 0.98), unscale_in_step=unscale_in_step), inf_at_step=2
    )
    callbacks = [RectificationMonitor(), GradientHistogramMonitor()]
    trainer = make_trainer(tmp_path, callbacks, max_steps=6, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    trainer.fit(model)
    events = read_events(trainer.logger.log_dir)
    steps, skipped = scalar_series(events, "radam/group0/skipped")
    assert steps == [0, 1, 2, 3, 4, 5]
    assert skipped.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    for name in ("step", "rho_t", "r_t", "rectified"):
        assert scalar_series(events, f"radam/group0/{name}")[0] == [0, 1, 3, 4, 5], (
            name
        )  # no point for the skipped step
    assert scalar_series(events, "radam/group0/step")[1].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert model.optimizers().optimizer.rectification_stats()[0].step == 5
    steps, nonfinite = scalar_series(events, "grad/nonfinite")
    assert steps == [0, 1, 2, 3, 4, 5]
    assert nonfinite[2] > 0
    assert nonfinite[[0, 1, 3, 4, 5]].sum() == 0


def test_rectification_monitor_layer_statistics(tmp_path):
    trainer = make_trainer(tmp_path, [RectificationMonitor(layers=r"\.weight$")], max_steps=7)
    model = Model(lambda params: RAdam(params, lr=1e-2, betas=(0.9, 0.98), eps=1e-6))
    trainer.fit(model)
    events = read_events(trainer.logger.log_dir)
    layer_tags = sorted(tag for tag in events.Tags()["scalars"] if tag.startswith("radam/layer/"))
    assert layer_tags == sorted(
        f"radam/layer/{name}/{stat}" for name in ("hidden.weight", "out.weight")
        for stat in ("adaptive_lr_log10_mean", "adaptive_lr_log10_std", "rectified_lr_log10_mean")
    )  # fmt: skip
    optimizer = model.optimizers().optimizer
    for name, p in [("hidden.weight", model.hidden.weight), ("out.weight", model.out.weight)]:
        state = optimizer.state[p]
        t = int(state["step"])
        lr = math.sqrt(1 - 0.98**t) / (state["exp_avg_sq"].double().sqrt() + 1e-6)
        log10_lr = lr.log10()
        steps, mean = scalar_series(events, f"radam/layer/{name}/adaptive_lr_log10_mean")
        assert steps == list(range(7))
        np.testing.assert_allclose(mean[-1], log10_lr.mean().item(), rtol=1e-5)
        np.testing.assert_allclose(
            scalar_series(events, f"radam/layer/{name}/adaptive_lr_log10_std")[1][-1],
            log10_lr.std(correction=0).item(),
            rtol=1e-4,
        )
        steps, rectified = scalar_series(events, f"radam/layer/{name}/rectified_lr_log10_mean")
        assert steps == [5, 6]  # t = 6, 7: rectified with threshold 5
        np.testing.assert_allclose(rectified[-1], log10_lr.mean().item() + math.log10(r_t(t, 0.98)), rtol=1e-5)
